"""CPU kernels XLA does not have, as FFI custom calls built on first use.

Two kernels, each its own source and library:
`attention(qkv, bias, heads)` (`attention.cc`): scaled dot-product attention of every head
read in place from the fused q|k|v projection, the context written as [B, T, N*D]
(`models/fused_attention.py` uses it at inference; `reference_attention` is NumPy).
`int8_dense(x, qvalue, scale)`: the W8A8 product of `models/int8.py` (rows of x
quantized per token, int8 x int8, int32 accumulation, both scales) on AVX-512 VNNI
(`int8_dense.cc`; `int8_dense_norm` adds bias and residual and LayerNorms each tile of
rows while it is in cache: BERT's `output` blocks), at ~2x XLA's bf16 product on this machine
(benchmarks/results/runtime.md). It computes the written formula exactly
(`reference_int8_dense`); XLA's own product rewrites absmax / 127 as a product with
the reciprocal, so about one activation in 10^6 lands on the neighbouring integer
there, and the final scaling may round differently (~1e-7).

The source is compiled with the system's C++ compiler into `$BERTJAX_KERNEL_CACHE`
(default `$BERTJAX_CACHE/kernels`), keyed by the source and jaxlib version, once per
machine. `available()` is False (and callers use XLA's product) off Linux x86 with
VNNI, without a compiler, or with `BERTJAX_KERNELS=0`. Every kernel works row by row
(a token's row; an example's rows for attention), so under a sharded `jit` each is a
`custom_partitioning` call: each device runs it on its own rows, weights whole, no
gather of activations (`_by_rows`).
"""

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from bertjax import paths

SOURCE = Path(__file__).with_name("int8_dense.cc")
TARGET = "bertjax_int8_dense"
NORM_TARGET = "bertjax_int8_dense_norm"
ATTENTION_SOURCE = Path(__file__).with_name("attention.cc")
ATTENTION_TARGET = "bertjax_attention"
HEADERS = (Path(__file__).with_name("parallel.h"),)
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx512f", "-mavx512bw", "-mavx512vl",
         "-mavx512vnni")  # fmt: skip


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_has_vnni() -> bool:
    flags = _cpu_flags()
    return " avx512_vnni" in flags and " avx512bw" in flags


def _cache_dir() -> Path:
    root = os.environ.get("BERTJAX_KERNEL_CACHE")
    return Path(root) if root else paths.cache_root() / "kernels"


def build(source: Path = SOURCE) -> Path:
    """The compiled shared library of `source` (compiled now unless cached)."""
    text = source.read_bytes() + b"".join(h.read_bytes() for h in HEADERS)
    key = hashlib.sha256(text + jaxlib.__version__.encode()).hexdigest()[:16]
    library = _cache_dir() / f"{source.stem}-{key}.so"
    if library.exists():
        return library
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) to build the int8 kernel")
    library.parent.mkdir(parents=True, exist_ok=True)
    print(f"bertjax: building {source.name} into {library} (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        out = Path(scratch) / library.name
        command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building {source.name} failed:\n{done.stderr[-2000:]}")
        os.replace(out, library)  # atomic: a concurrent build sees a whole file or none
    return library


def _register(source: Path, *targets: tuple[str, str]) -> bool:
    """Builds `source` and registers its `(target, symbol)` handlers."""
    try:
        library = ctypes.cdll.LoadLibrary(str(build(source)))
    except (OSError, RuntimeError) as error:
        logging.warning("bertjax: %s kernel unavailable, using XLA: %s", source.name, error)
        return False
    for target, symbol in targets:
        capsule = jax.ffi.pycapsule(getattr(library, symbol))
        jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    return True


def _enabled() -> bool:
    return os.environ.get("BERTJAX_KERNELS", "1") != "0"


@functools.cache
def available() -> bool:
    """Whether the VNNI int8 kernel is built and registered (once per process)."""
    if not _enabled() or not _cpu_has_vnni():
        return False
    return _register(SOURCE, (TARGET, "BertjaxInt8Dense"), (NORM_TARGET, "BertjaxInt8DenseNorm"))


@functools.cache
def attention_available() -> bool:
    """Whether the attention kernel (AVX-512F) is built and registered (once per process)."""
    if not _enabled() or " avx512f" not in _cpu_flags():
        return False
    return _register(ATTENTION_SOURCE, (ATTENTION_TARGET, "BertjaxAttention"))


def _row_axis(shape):
    """The mesh axes the leading dimension of an argument is sharded over (or None)."""
    spec = getattr(shape.sharding, "spec", ())
    return spec[0] if len(spec) else None


def _by_rows(rule: str, rows: tuple[int, ...], static: int = 0):
    """Decorator: `fn(*arrays, *statics)` as a `custom_partitioning` call that splits the
    leading axis of the arguments `rows` and of the result (Shardy `rule`; every other factor
    is replicated) and gives every other argument whole: each device runs `fn` on its own
    rows, as XLA's own ops would, instead of gathering them. One device: `fn` inline."""
    factors = tuple(dict.fromkeys(rule.replace("->", ",").replace(",", " ").split()))

    def decorator(fn):
        arity = fn.__code__.co_argcount
        wrapped = custom_partitioning(fn, static_argnums=tuple(range(arity - static, arity)))

        def split(mesh, axis, shape):
            return NamedSharding(mesh, PartitionSpec(axis, *[None] * (len(shape.shape) - 1)))

        def partition(*args):
            *statics, mesh, arg_shapes, result_shape = args
            axis, whole = _row_axis(arg_shapes[rows[0]]), NamedSharding(mesh, PartitionSpec())
            arg_shardings = tuple(split(mesh, axis, a) if i in rows else whole
                                  for i, a in enumerate(arg_shapes))  # fmt: skip
            return mesh, lambda *a: fn(*a, *statics), split(mesh, axis, result_shape), arg_shardings

        def infer(*args):
            *_, mesh, arg_shapes, result_shape = args
            return split(mesh, _row_axis(arg_shapes[rows[0]]), result_shape)

        row_factor = rule.split(",")[rows[0]].split()[0]
        wrapped.def_partition(
            partition=partition, infer_sharding_from_operands=infer, sharding_rule=rule,
            need_replication_factors=tuple(f for f in factors if f != row_factor),
        )  # fmt: skip
        return wrapped

    return decorator


def supports_attention(head_dim: int) -> bool:
    """Whether heads of `head_dim` fit the attention kernel (else XLA's attention runs)."""
    return head_dim % 16 == 0 and head_dim <= 128 and attention_available()


def attention(qkv: jax.Array, bias: jax.Array, heads: int, qkv_bias=None) -> jax.Array:
    """Context [B, T, N*D] of `qkv` [B, T, 3*N*D] (q | k | v, heads side by side; plus
    `qkv_bias` [3*N*D], added as they are read) with the additive key bias [B, T]:
    softmax(q . k / sqrt(D) + bias) . v per head, float32."""
    if not attention_available():
        raise RuntimeError("the attention kernel is not available here (see `attention_available`)")
    b, t, width = qkv.shape
    if qkv_bias is None:
        qkv_bias = jnp.zeros((width,), jnp.float32)
    return _attention_call(
        qkv.astype(jnp.float32),
        jnp.asarray(bias, jnp.float32).reshape(b, t),
        jnp.asarray(qkv_bias, jnp.float32).reshape(width),
        heads,
    )


@_by_rows("b t w, b t, w -> b t c", rows=(0, 1), static=1)
def _attention_call(qkv, bias, qkv_bias, heads):
    b, t, width = qkv.shape
    shape = jax.ShapeDtypeStruct((b * t, width // 3), jnp.float32)
    out = jax.ffi.ffi_call(ATTENTION_TARGET, shape)(
        qkv.reshape(b * t, width), bias, qkv_bias, heads=np.int64(heads)
    )
    return out.reshape(b, t, width // 3)


def reference_attention(qkv, bias, heads: int, qkv_bias=None) -> np.ndarray:
    """NumPy (float64) of what `attention` computes."""
    qkv = np.asarray(qkv, np.float64) + (0.0 if qkv_bias is None else np.asarray(qkv_bias))
    b, t, width = qkv.shape
    d = width // (3 * heads)
    q, k, v = (qkv[..., i * width // 3:(i + 1) * width // 3].reshape(b, t, heads, d)
               for i in range(3))  # fmt: skip
    scores = np.einsum("bthd,bshd->bhts", q / np.sqrt(d), k) + np.asarray(bias)[:, None, None, :]
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, width // 3)


def supports(in_features: int, out_features: int) -> bool:
    """Whether a [in, out] kernel fits the VNNI product (else XLA's is used)."""
    return in_features % 4 == 0 and out_features % 16 == 0 and available()


def int8_dense(x: jax.Array, qvalue: jax.Array, scale: jax.Array) -> jax.Array:
    """`x [..., K] @ (qvalue [K, N] int8 * scale [N])` with x quantized per row: float32
    [..., N], equal to `models.int8.int8_dense` without an input scale."""
    if not available():
        raise RuntimeError("the int8 VNNI kernel is not available here (see `available`)")
    k, n = qvalue.shape
    rows = x.reshape(-1, k).astype(jnp.float32)
    out = _dense_call(rows, qvalue.astype(jnp.int8), jnp.asarray(scale, jnp.float32).reshape(n))
    return out.reshape(*x.shape[:-1], n)


@_by_rows("m k, k n, n -> m n", rows=(0,))
def _dense_call(rows, qvalue, scale):
    shape = jax.ShapeDtypeStruct((rows.shape[0], qvalue.shape[1]), jnp.float32)
    return jax.ffi.ffi_call(TARGET, shape)(rows, qvalue, scale)


def reference_int8_dense(x, qvalue, scale) -> np.ndarray:
    """NumPy, exactly what the kernel computes: each row of x [M, K] quantized by
    absmax / 127 (round half to even, clip to [-127, 127]), the product in int64, then
    `acc * (x_scale * scale)` in float32."""
    x = np.asarray(x, np.float32)
    absmax = np.abs(x).max(-1, keepdims=True)
    x_scale = np.maximum(absmax / np.float32(127), np.finfo(np.float32).tiny)
    x_q = np.clip(np.round(x / x_scale), -127, 127).astype(np.int64)
    acc = x_q @ np.asarray(qvalue).astype(np.int64)
    return acc.astype(np.float32) * (x_scale * np.asarray(scale, np.float32)[None])


def int8_dense_norm(x, qvalue, scale, bias, residual, gamma, beta, eps: float) -> jax.Array:
    """LayerNorm(`int8_dense(x, qvalue, scale)` + bias + residual) with LayerNorm params
    `gamma`, `beta` [N] and `eps`: float32 [..., N] (`reference_int8_dense_norm`)."""
    if not available():
        raise RuntimeError("the int8 VNNI kernel is not available here (see `available`)")
    k, n = qvalue.shape
    rows = x.reshape(-1, k).astype(jnp.float32)
    vector = lambda v: jnp.asarray(v, jnp.float32).reshape(n)  # noqa: E731
    out = _dense_norm_call(rows, qvalue.astype(jnp.int8), vector(scale), vector(bias),
                           jnp.asarray(residual, jnp.float32).reshape(rows.shape[0], n),
                           vector(gamma), vector(beta), float(eps))  # fmt: skip
    return out.reshape(*x.shape[:-1], n)


@_by_rows("m k, k n, n, n, m n, n, n -> m n", rows=(0, 4), static=1)
def _dense_norm_call(rows, qvalue, scale, bias, residual, gamma, beta, eps):
    shape = jax.ShapeDtypeStruct((rows.shape[0], qvalue.shape[1]), jnp.float32)
    call = jax.ffi.ffi_call(NORM_TARGET, shape)
    return call(rows, qvalue, scale, bias, residual, gamma, beta, eps=np.float32(eps))


def reference_int8_dense_norm(x, qvalue, scale, bias, residual, gamma, beta, eps) -> np.ndarray:
    """NumPy (float64 after the product) of what `int8_dense_norm` computes."""
    y = reference_int8_dense(x, qvalue, scale).astype(np.float64) + bias + residual
    mean = y.mean(-1, keepdims=True)
    variance = ((y - mean) ** 2).mean(-1, keepdims=True)
    return (y - mean) / np.sqrt(variance + eps) * gamma + beta
