"""`general_distill(config, workdir)`: task-agnostic distillation on unlabeled text.

TinyBERT's first stage (a student learns the teacher's attention scores and hidden
states) or, with `config.supernet`, AutoTinyBERT's SuperPLM training (K random
sub-architectures per batch through one masked full-size graph). Not
`train.loop.train_and_evaluate`: there is no task, no label, no head and no dev
metric, and the data is a corpus of fixed-length chunks (`data/corpus.py`).

A run writes to `workdir` as a fine-tuning run does: `config.json` (a workdir belongs
to one config, `train.workdir`), `checkpoints/` (orbax, resumed automatically at the
same batch of the same epoch), `metrics.jsonl`, `results.json` and the student (or the
full-size supernet) in HF layout under `export/`, without the projection. Progress
goes to stderr; SIGINT / SIGTERM save the current step.
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from bertjax import models, paths
from bertjax.bench.latency import model_size
from bertjax.data import corpus, tokenizer
from bertjax.models import submodel
from bertjax.pretrain import steps
from bertjax.search.space import Space, sample_many
from bertjax.train import checkpoint, validation, writers
from bertjax.train import interrupt as interrupt_lib
from bertjax.train import workdir as workdir_lib
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods.distill.layer_maps import layer_map
from methods.distill.tinybert import PARAMS_KEY, init_projection

PROJECTION_FILE = "projection.npz"


def is_general(config: ConfigDict) -> bool:
    """Whether `config` is a general-distillation config (it has a `corpus` block)."""
    return config.get("corpus") is not None


def say(line: str) -> None:
    print(f"bertjax: {line}", file=sys.stderr, flush=True)


def build_student(config: ConfigDict, teacher, teacher_params, vocab_size: int):
    """`(model, params)`: the student encoder (no head) with its projection under
    `distill/projection` (an identity start when the widths agree).

    Supernet: the teacher's architecture, initialised from the teacher
    (`supernet.init="teacher"`) or at random."""
    overrides = dict(
        hidden_dropout_prob=config.model.hidden_dropout_prob,
        attention_probs_dropout_prob=config.model.attention_probs_dropout_prob,
    )
    seed = config.train.seed
    if config.get("supernet") is not None:
        arch_config = dataclasses.replace(teacher.config, **overrides)
        model, params = models.build(arch_config, seed=seed)
        if config.supernet.init == "teacher":
            params = jax.tree_util.tree_map(np.asarray, teacher_params)
    else:
        name = config.model.name
        if models.variants.is_variant(name) and not (paths.models_root() / name).is_dir():
            overrides["vocab_size"] = vocab_size
        model, params = models.load_pretrained(name, head=None, seed=seed, **overrides)
    student_width, teacher_width = model.config.hidden_size, teacher.config.hidden_size
    key = jax.random.fold_in(jax.random.key(seed), 2)
    projection = init_projection(key, student_width, teacher_width)
    if student_width == teacher_width:
        projection["kernel"] = np.eye(student_width, dtype=np.float32)
    return model, {**params, PARAMS_KEY: {"projection": projection}}


def student_pairs(config: ConfigDict, student_layers: int, teacher_layers: int):
    return layer_map(config.distill.layer_map, student_layers, teacher_layers)


def evaluate(eval_fn, params, teacher_params, chunks, batch_size, masks=None) -> dict:
    """Mean eval metrics over the corpus's full eval batches."""
    totals, count = {}, 0
    for batch in corpus.eval_batches(chunks, batch_size):
        args = (params, teacher_params, batch) + (() if masks is None else (masks,))
        values = jax.device_get(eval_fn(*args))
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        count += 1
    return {key: value / max(count, 1) for key, value in totals.items()}


def eval_archs(config: ConfigDict) -> dict:
    """The supernet's named eval architectures: the largest and the smallest of the space."""
    space = Space.from_config(config.supernet)
    return {"largest": space.largest, "smallest": space.smallest}


def run_eval(config, model, eval_fn, params, teacher_params, chunks) -> dict:
    batch_size = config.train.eval_batch_size
    if config.get("supernet") is None:
        return evaluate(eval_fn, params, teacher_params, chunks, batch_size)
    out = {}
    for name, arch in eval_archs(config).items():
        masks = submodel.mask_arrays(model.config, arch)
        values = evaluate(eval_fn, params, teacher_params, chunks, batch_size, masks)
        out.update({f"{name}_{k}": v for k, v in values.items()})
    out["loss"] = out["largest_loss"]
    return out


def stacked_masks(config: ConfigDict, model_config, step: int) -> tuple[dict, list]:
    """The [K, ...] masks of step `step`'s sampled architectures, and the architectures."""
    space = Space.from_config(config.supernet)
    archs = sample_many(space, config.train.seed, step, config.supernet.archs_per_step)
    per_arch = [submodel.mask_arrays(model_config, arch) for arch in archs]
    return {k: np.stack([m[k] for m in per_arch]) for k in per_arch[0]}, archs


def general_distill(config: ConfigDict, workdir: str | Path, *, overwrite: bool = False) -> dict:
    """Distils `config.teacher` into the student (or supernet) on `config.corpus`; exports
    it and returns results (`metrics`: the final eval losses on the corpus's eval split)."""
    workdir = Path(workdir)
    validation.check_config(config)
    finished = workdir_lib.prepare(workdir, config, overwrite=overwrite)
    if finished is not None:
        say(f"{workdir} holds this run, finished (results.json): nothing to do")
        return finished
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"general distillation from {config.teacher}: loading teacher, student and corpus")
    teacher_dir = models.resolve(config.teacher)
    tok_source = str(models.resolve(config.model.tokenizer or config.teacher))
    tok = tokenizer.load_tokenizer(tok_source)
    teacher, teacher_params = models.load_pretrained(teacher_dir, head=None)
    model, params = build_student(config, teacher, teacher_params, len(tok))
    kw = dict(data_dir=config.corpus.root or None)
    seq_len = config.corpus.seq_len
    train_chunks = corpus.load_chunks(
        tok, config.corpus.name, "train", seq_len, limit=config.corpus.train_limit, **kw
    )
    eval_chunks = corpus.load_chunks(
        tok, config.corpus.name, config.corpus.eval_split, seq_len,
        limit=config.corpus.eval_limit, **kw,
    )  # fmt: skip
    batches_per_epoch = corpus.num_batches(train_chunks, config.train.batch_size)
    if batches_per_epoch == 0:
        raise ValueError(
            f"corpus {config.corpus.name}: {len(train_chunks)} chunks, fewer than one batch"
        )
    total_steps = config.train.num_steps
    # A budget cut: train up to `stop_after_steps` on the schedule of `num_steps`, then export.
    last_step = min(total_steps, config.train.get("stop_after_steps", 0) or total_steps)
    supernet = config.get("supernet") is not None
    if supernet:
        train_step = steps.make_supernet_step(model, teacher)
        eval_fn = steps.make_supernet_eval(model, teacher)
    else:
        pairs = student_pairs(
            config, model.config.num_hidden_layers, teacher.config.num_hidden_layers
        )
        train_step = steps.make_student_step(model, teacher, pairs, config.distill.embedding)
        eval_fn = steps.make_student_eval(model, teacher, pairs, config.distill.embedding)
    tx = make_optimizer(config.train, total_steps)
    state = TrainState.create(params, tx, config.train.seed)
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    state = checkpoint.restore_latest(manager, state)
    step = int(jax.device_get(state.step))
    what = "supernet" if supernet else f"student {config.model.name}"
    say(
        f"{what} <- {config.teacher}: {len(train_chunks)} train / {len(eval_chunks)} eval chunks "
        f"of {seq_len} tokens, {total_steps} steps of {config.train.batch_size}"
        + (f" x {config.supernet.archs_per_step} architectures" if supernet else "")
        + (f", stopping after step {last_step}" if last_step < total_steps else "")
        + (f"; resuming from step {step}" if step else "; new run")
        + f" in {workdir}"
    )
    writer = writers.MetricWriter(workdir, resume_step=step)
    previous = [r for r in writers.read_jsonl(writer.path) if "elapsed_seconds" in r]
    elapsed = previous[-1]["elapsed_seconds"] if previous else 0.0
    bar = tqdm(
        total=last_step, initial=step, desc="general distill", dynamic_ncols=True,
        mininterval=2.0, file=sys.stderr,
    )  # fmt: skip
    eval_metrics: dict = {}
    window_start, window_steps = time.perf_counter(), 0
    with interrupt_lib.deferred_signals() as stop:
        while step < last_step:
            epoch, offset = divmod(step, batches_per_epoch)
            for batch in corpus.train_batches(
                train_chunks, config.train.batch_size, config.train.seed, epoch, offset
            ):
                if supernet:
                    masks, _ = stacked_masks(config, model.config, step)
                    state, values = train_step(state, teacher_params, batch, masks)
                else:
                    state, values = train_step(state, teacher_params, batch)
                step += 1
                window_steps += 1
                bar.update(1)
                end = step == last_step
                if step % config.train.log_every_steps == 0 or end or stop:
                    values = {k: float(v) for k, v in jax.device_get(values).items()}
                    if not np.isfinite(values["loss"]):
                        raise FloatingPointError(f"loss is {values['loss']} at step {step}")
                    seconds = time.perf_counter() - window_start
                    elapsed += seconds
                    rate = window_steps * config.train.batch_size / max(seconds, 1e-9)
                    writer.write(step, **values, examples_per_second=rate, elapsed_seconds=elapsed)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", ex_s=f"{rate:.1f}")
                    window_start, window_steps = time.perf_counter(), 0
                if step % config.checkpoint.every_steps == 0 or end or stop:
                    checkpoint.save(manager, state, force=end or bool(stop))
                if stop:
                    bar.close()
                    manager.wait_until_finished()
                    writer.close()
                    raise interrupt_lib.Interrupted(step, stop.signum)
                if step % config.train.eval_every_steps == 0 or end:
                    eval_start = time.perf_counter()
                    eval_metrics = run_eval(
                        config, model, eval_fn, state.params, teacher_params, eval_chunks
                    )
                    writer.write(step, prefix="eval_", **eval_metrics)
                    bar.write(
                        f"step {step}: eval "
                        + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                        file=sys.stderr,
                    )
                    window_start += time.perf_counter() - eval_start
                if step >= last_step:
                    break
    bar.close()
    manager.wait_until_finished()
    if not eval_metrics:
        eval_metrics = run_eval(config, model, eval_fn, state.params, teacher_params, eval_chunks)
    writer.close()
    final = steps.model_params(jax.device_get(state.params))
    results = {
        "task": f"general:{config.corpus.name}",
        "model": "supernet" if supernet else config.model.name,
        "teacher": config.teacher,
        "method": "autotinybert_supernet" if supernet else "general_distill",
        "metrics": eval_metrics,
        "smoke": bool(config.get("smoke", False)),
        **model_size(final),
        "train_seconds": round(elapsed, 2),
        "steps": last_step,
        "schedule_steps": total_steps,
        "train_chunks": len(train_chunks),
        "seq_len": seq_len,
    }
    if config.export:
        models.save_pretrained(model, final, workdir / "export", tokenizer=tok_source)
    # The projection (student width -> teacher width): the supernet's one-shot evaluation
    # (`bertjax.search`) scores sub-models with the training loss, which needs it.
    projection = jax.device_get(state.params[PARAMS_KEY]["projection"])
    np.savez(workdir / PROJECTION_FILE, **{k: np.asarray(v) for k, v in projection.items()})
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
