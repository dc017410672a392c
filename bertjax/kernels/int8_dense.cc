// W8A8 dense product on AVX-512 VNNI, as an XLA FFI custom call (CPU).
//
// out[m, n] = sum_k q(x)[m, k] * w[k, n] * x_scale[m] * w_scale[n], float32, where
// q(x) quantizes each row of x to int8 by its absolute maximum (x_scale = absmax / 127),
// as bertjax/models/int8.py's `int8_dense` writes it (rounding half to even, clipping
// to [-127, 127], acc * (x_scale * w_scale)), exactly: `reference_int8_dense` in
// __init__.py is the same in NumPy, bit for bit (XLA's own product multiplies by
// 1/127 instead, so rare ties round to the neighbouring integer there).
// Why: XLA:CPU's int8 x int8 -> int32 product runs at ~140 GMAC/s on this machine, below
// its bf16 product (~185); VPDPBUSD multiplies 64 u8 x s8 pairs per instruction, so the
// int8 product can outrun bf16 instead (~300 GMAC/s here).
//
// VPDPBUSD takes unsigned activations: rows are quantized to [-127, 127] and shifted by
// +128 into u8; the shift is taken back per column, 128 * sum_k w[k, n], in the
// epilogue (exact in int32). Weights are repacked per call into 16-column panels of
// 4-row groups ([N/16][K/4][16][4] bytes), the layout one VPDPBUSD reads (a vectorized
// transpose). The work runs on XLA's own intra-op
// thread pool (no second pool competing for the cores): 6-row x 64-column register
// tiles over the whole K (the packed weights, <= 0.6 MB for BERT's FFN, stay in L2).
// Needs K % 4 == 0 and N % 16 == 0; the Python side falls back to XLA otherwise.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using bertjax::ParallelFor;
using bertjax::Scratch;

namespace {

constexpr int kRows = 6;     // rows per register tile
constexpr int kVectors = 4;  // 16-column vectors per register tile (64 columns)

// c += a (u8) . b (s8), in place: with GCC 12's intrinsic the tile's accumulators were
// copied and stored to memory on every product (180 GMAC/s); this keeps them in registers.
inline __m512i Dot(__m512i c, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(a), "v"(b));
  return c;
}

// Panel p (columns 16p .. 16p+15) of weights [K, N] int8 into [K/4][16][4] bytes (a
// 4 x 16 byte transpose per group of 4 rows), and its column sums (by VPDPBUSD with
// ones) for the +128 shift.
void PackPanel(const int8_t* w, int64_t k, int64_t n, int64_t p, int8_t* packed,
               int32_t* colsum) {
  const int64_t groups = k / 4;
  int8_t* dst = packed + p * groups * 64;
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i sums = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* src = w + g * 4 * n + p * 16;
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + n));
    const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * n));
    const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * n));
    const __m128i a_lo = _mm_unpacklo_epi8(r0, r1), a_hi = _mm_unpackhi_epi8(r0, r1);
    const __m128i b_lo = _mm_unpacklo_epi8(r2, r3), b_hi = _mm_unpackhi_epi8(r2, r3);
    __m512i out = _mm512_castsi128_si512(_mm_unpacklo_epi16(a_lo, b_lo));
    out = _mm512_inserti32x4(out, _mm_unpackhi_epi16(a_lo, b_lo), 1);
    out = _mm512_inserti32x4(out, _mm_unpacklo_epi16(a_hi, b_hi), 2);
    out = _mm512_inserti32x4(out, _mm_unpackhi_epi16(a_hi, b_hi), 3);
    _mm512_storeu_si512(dst + g * 64, out);
    sums = Dot(sums, ones, out);
  }
  _mm512_storeu_si512(colsum + p * 16, sums);
}

// One row of x to u8 (q + 128) and its scale, as int8.py's `quantize_rows`.
void QuantizeRow(const float* x, int64_t k, uint8_t* q, float* scale) {
  __m512 absmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 mask = k - i >= 16 ? 0xFFFF : (__mmask16)((1u << (k - i)) - 1);
    absmax = _mm512_max_ps(absmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, x + i)));
  }
  float s = _mm512_reduce_max_ps(absmax) / 127.0f;
  s = s > FLT_MIN ? s : FLT_MIN;
  *scale = s;
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  const __m512i shift = _mm512_set1_epi32(128);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 mask = k - i >= 16 ? 0xFFFF : (__mmask16)((1u << (k - i)) - 1);
    // Round to nearest even (the default MXCSR mode), as jnp.round.
    __m512i v = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_maskz_loadu_ps(mask, x + i), vs));
    v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), shift);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, mask, v);
  }
}

template <int R, int V>
void Tile(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t groups,
          const int32_t* colsum, const float* x_scale, const float* w_scale, float* out,
          int64_t ldo) {
  __m512i acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  const int64_t stride = groups * 64;  // bytes between 16-column panels
  for (int64_t g = 0; g < groups; ++g) {
    __m512i b[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) b[v] = _mm512_loadu_si512(panel + v * stride + g * 64);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t four;
      std::memcpy(&four, a + r * lda + g * 4, 4);
      const __m512i x = _mm512_set1_epi32(four);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = Dot(acc[r][v], x, b[v]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const __m512i shift = _mm512_slli_epi32(_mm512_loadu_si512(colsum + v * 16), 7);
    const __m512 ws = _mm512_loadu_ps(w_scale + v * 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 value = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], shift));
      const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(x_scale[r]), ws);
      _mm512_storeu_ps(out + r * ldo + v * 16, _mm512_mul_ps(value, scale));
    }
  }
}

template <int R>
void TileRow(int vectors, const uint8_t* a, int64_t lda, const int8_t* panel, int64_t groups,
             const int32_t* colsum, const float* x_scale, const float* w_scale, float* out,
             int64_t ldo) {
  switch (vectors) {
    case 4: return Tile<R, 4>(a, lda, panel, groups, colsum, x_scale, w_scale, out, ldo);
    case 3: return Tile<R, 3>(a, lda, panel, groups, colsum, x_scale, w_scale, out, ldo);
    case 2: return Tile<R, 2>(a, lda, panel, groups, colsum, x_scale, w_scale, out, ldo);
    default: return Tile<R, 1>(a, lda, panel, groups, colsum, x_scale, w_scale, out, ldo);
  }
}

using TileFn = void (*)(int, const uint8_t*, int64_t, const int8_t*, int64_t, const int32_t*,
                        const float*, const float*, float*, int64_t);
constexpr TileFn kTiles[kRows + 1] = {nullptr,     TileRow<1>, TileRow<2>, TileRow<3>,
                                      TileRow<4>, TileRow<5>, TileRow<6>};

// The product into `o` [M, N]; then `epilogue(row, rows)` on each finished tile of rows
// (all N columns written, still in cache).
template <typename Epilogue>
ffi::Error Product(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::S8>& w,
                   ffi::Buffer<ffi::F32>& w_scale, float* o, const Epilogue& epilogue) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[0]) {
    return ffi::Error::InvalidArgument("int8_dense: x [M, K] and w [K, N] expected");
  }
  const int64_t m = xd[0], k = xd[1], n = wd[1];
  if (k % 4 != 0 || n % 16 != 0) {
    return ffi::Error::InvalidArgument("int8_dense: needs K % 4 == 0 and N % 16 == 0");
  }
  thread_local std::vector<int8_t> packed_buffer;
  thread_local std::vector<int32_t> colsum_buffer;
  thread_local std::vector<uint8_t> q_buffer;
  thread_local std::vector<float> scale_buffer;
  int8_t* packed = Scratch(packed_buffer, k * n);
  int32_t* colsum = Scratch(colsum_buffer, n);
  uint8_t* q = Scratch(q_buffer, m * k);
  float* x_scale = Scratch(scale_buffer, m);
  const int8_t* wv = w.typed_data();
  const float* xs = x.typed_data();
  const float* ws = w_scale.typed_data();
  const int64_t groups = k / 4, panels = n / 16;
  // Phase 1: weight panels and quantized rows (independent items, one pool pass).
  ParallelFor(pool, panels + m, 8, [&](int64_t i) {
    if (i < panels) {
      PackPanel(wv, k, n, i, packed, colsum);
    } else {
      QuantizeRow(xs + (i - panels) * k, k, q + (i - panels) * k, x_scale + i - panels);
    }
  });
  // Phase 2: 6-row tiles, each across all columns, then its epilogue.
  const int64_t tiles = (m + kRows - 1) / kRows;
  ParallelFor(pool, tiles, 2, [&](int64_t t) {
    const int64_t row = t * kRows;
    const int rows = static_cast<int>(std::min<int64_t>(m - row, kRows));
    for (int64_t col = 0; col < n; col += 16 * kVectors) {
      const int vectors = static_cast<int>(std::min<int64_t>((n - col) / 16, kVectors));
      kTiles[rows](vectors, q + row * k, k, packed + (col / 16) * groups * 64, groups,
                   colsum + col, x_scale + row, ws + col, o + row * n + col, n);
    }
    epilogue(row, rows);
  });
  return ffi::Error::Success();
}

ffi::Error Int8DenseImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> w,
                         ffi::Buffer<ffi::F32> w_scale, ffi::ResultBuffer<ffi::F32> out) {
  return Product(pool, x, w, w_scale, out->typed_data(), [](int64_t, int) {});
}

// y = LayerNorm(row + bias + residual) in place, over n % 16 == 0 floats: mean, then the
// variance of the centred values (two passes, as the model's LayerNorm), then
// (y - mean) * (rsqrt(var + eps) * gamma) + beta.
void ResidualNormRow(float* y, const float* bias, const float* residual, const float* gamma,
                     const float* beta, int64_t n, float eps) {
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 v = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(y + j), _mm512_loadu_ps(bias + j)),
                                   _mm512_loadu_ps(residual + j));
    _mm512_storeu_ps(y + j, v);
    total = _mm512_add_ps(total, v);
  }
  const float mean = _mm512_reduce_add_ps(total) / static_cast<float>(n);
  const __m512 vmean = _mm512_set1_ps(mean);
  __m512 squares = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(y + j), vmean);
    squares = _mm512_fmadd_ps(c, c, squares);
  }
  const float variance = _mm512_reduce_add_ps(squares) / static_cast<float>(n);
  const __m512 inverse = _mm512_set1_ps(1.0f / std::sqrt(variance + eps));
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 mul = _mm512_mul_ps(inverse, _mm512_loadu_ps(gamma + j));
    const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(y + j), vmean);
    _mm512_storeu_ps(y + j, _mm512_fmadd_ps(c, mul, _mm512_loadu_ps(beta + j)));
  }
}

// LayerNorm(x @ w + bias + residual): BERT's `output` blocks at inference, the residual
// sum and LayerNorm done on each tile of rows while it is in cache (XLA ran them as one
// more pass over [M, N] in and out).
ffi::Error Int8DenseNormImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> w,
                             ffi::Buffer<ffi::F32> w_scale, ffi::Buffer<ffi::F32> bias,
                             ffi::Buffer<ffi::F32> residual, ffi::Buffer<ffi::F32> gamma,
                             ffi::Buffer<ffi::F32> beta, ffi::ResultBuffer<ffi::F32> out,
                             float eps) {
  const auto wd = w.dimensions();
  if (wd.size() != 2) return ffi::Error::InvalidArgument("int8_dense_norm: w [K, N] expected");
  const int64_t n = wd[1];
  if (bias.element_count() != n || gamma.element_count() != n || beta.element_count() != n ||
      residual.element_count() != x.dimensions()[0] * n) {
    return ffi::Error::InvalidArgument("int8_dense_norm: bias, gamma, beta [N], residual [M, N]");
  }
  float* o = out->typed_data();
  const float *b = bias.typed_data(), *r = residual.typed_data();
  const float *g = gamma.typed_data(), *e = beta.typed_data();
  return Product(pool, x, w, w_scale, o, [&](int64_t row, int rows) {
    for (int i = 0; i < rows; ++i) ResidualNormRow(o + (row + i) * n, b, r + (row + i) * n, g, e, n, eps);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BertjaxInt8Dense, Int8DenseImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BertjaxInt8DenseNorm, Int8DenseNormImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps"));
