"""`train_and_evaluate(config, workdir)`: one fine-tuning run, resumable.

Meeting point of model, data, optimizer and compression methods.
A run writes to `workdir`: `config.json`, `checkpoints/` (orbax, resumed
automatically), `metrics.jsonl`, `tensorboard/`, `results.json` and the final
model in HF layout under `export/` (stored-form models, int8 or factorized: the stored
artifact, and its plain fp32 copy under `export_fp32/`). Before anything loads, the config
is checked (`validation`) and so is the workdir (`workdir`: a run of another config is refused,
a finished run of the same config is skipped). SIGINT / SIGTERM save the current
step and raise `interrupt.Interrupted`. Progress lines go to stderr.
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from bertjax import compilation, models, paths
from bertjax.bench.latency import model_size
from bertjax.data import pipeline, tasks, tokenizer
from bertjax.models import layout
from bertjax.train import (
    ahead,
    calibration,
    checkpoint,
    distributed,
    evaluation,
    steps,
    validation,
    writers,
)
from bertjax.train import interrupt as interrupt_lib
from bertjax.train import mesh as mesh_lib
from bertjax.train import teacher as teacher_lib
from bertjax.train import workdir as workdir_lib
from bertjax.train.method_config import build_method, method_name
from bertjax.train.optimizer import make_optimizer
from bertjax.train.state import TrainState
from methods.base import Context, Method


def build_model(config: ConfigDict, task: tasks.Task):
    """`(model, params, tokenizer)` for the config's model and task head."""
    name = config.model.name
    is_random = models.variants.is_variant(name) and not (paths.models_root() / name).is_dir()
    tokenizer_source = config.model.tokenizer or (None if is_random else str(models.resolve(name)))
    if tokenizer_source is None:
        raise ValueError(f"model {name!r} is a random size: set config.model.tokenizer")
    tok = tokenizer.load_tokenizer(tokenizer_source)
    overrides = dict(
        hidden_dropout_prob=config.model.hidden_dropout_prob,
        attention_probs_dropout_prob=config.model.attention_probs_dropout_prob,
    )
    if is_random:
        overrides["vocab_size"] = len(tok)
    head = "regression" if task.is_regression else "classification"
    model, params = models.load_pretrained(
        name,
        head=head,
        num_labels=tasks.num_labels(task),
        dtype=jnp.dtype(config.model.dtype),
        seed=config.train.seed,
        **overrides,
    )
    keep = tuple(config.model.get("keep_layers", ()) or ())
    if not keep and config.model.get("truncate_to", 0):
        keep = spaced_layers(model.config.num_hidden_layers, config.model.truncate_to)
    if keep:  # DistilBERT-style student: a subset of a (teacher's) layers, renumbered
        model, params = truncate(model, params, keep)
    return model, params, tok, tokenizer_source


def spaced_layers(num_layers: int, keep: int) -> tuple[int, ...]:
    """`keep` evenly spaced layers from the bottom: round(i * L / keep) (every other for L/2)."""
    if not 1 <= keep <= num_layers:
        raise ValueError(f"model.truncate_to must be in 1..{num_layers}, got {keep}")
    return tuple(round(i * num_layers / keep) for i in range(keep))


def truncate(model, params, keep: tuple[int, ...]):
    """`(model, params)` keeping only layers `keep` (0-based, in order), renumbered."""
    num_layers = model.config.num_hidden_layers
    if not keep or any(not 0 <= i < num_layers for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"model.keep_layers {keep} must be distinct layers of 0..{num_layers - 1}")
    if list(keep) != sorted(keep):
        raise ValueError(f"model.keep_layers {keep} must be increasing")
    return model.clone(config=model.config.with_layers(keep)), layout.select_layers(params, keep)


def load_data(config: ConfigDict, task: tasks.Task, tok):
    """`(train, eval)` encoded splits, tokenized once and cached."""
    kw = dict(
        tokenizer=tok,
        max_seq_length=config.data.max_seq_length,
        data_dir=config.data.root or None,
        source=config.data.source,
    )
    train = tokenizer.load_encoded(task, "train", limit=config.data.train_limit, **kw)
    split = config.data.eval_split or tasks.eval_split(task)
    evaluation = tokenizer.load_encoded(task, split, limit=config.data.eval_limit, **kw)
    for encoded in (train, evaluation):
        encoded.bucket_multiple = config.data.get("bucket_multiple", 32)
    return train, evaluation


def _loggable(values: dict) -> dict:
    """Step metrics for the log: scalars as floats, small arrays (EMD flows) as lists."""
    out = {}
    for key, value in values.items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[key] = float(value)
        elif value.size <= 1024:
            out[key] = np.round(value.astype(np.float64), 6).tolist()
    return out


def _check_finite(history: list[tuple[int, dict]]) -> None:
    for step, values in history:
        loss = float(values["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}: stopping the run")


# Named random streams of a run, each a fold of the seed's key (values fixed for
# reproducibility: changing one changes every run's initial method state).
RNG_STREAMS = {"method_state": 1, "method_params": 2}


def rng_streams(seed: int) -> dict:
    """`{"state": key, "params": key}`, the keys methods' `init` receives."""
    key = jax.random.key(seed)
    return {
        "state": jax.random.fold_in(key, RNG_STREAMS["method_state"]),
        "params": jax.random.fold_in(key, RNG_STREAMS["method_params"]),
    }


@dataclasses.dataclass
class Run:
    """Everything a run builds before its first step (see `create_train_state`)."""

    config: ConfigDict  # resolved (e.g. contribution-based layer dropping measured)
    task: tasks.Task
    model: Any
    state: TrainState  # replicated over `mesh`
    method: Method
    tokenizer_source: str
    train_data: Any
    eval_data: Any
    mesh: Any
    teacher: Any  # the teacher model (distillation, loyalty) or None
    teacher_params: Any
    total_steps: int
    steps_per_epoch: int
    calibration_report: dict


def create_train_state(config: ConfigDict) -> Run:
    """Model, data, teacher (loaded once), composed method and the initial `TrainState`
    of `config`: what `train_and_evaluate` runs, and what benchmarks and notebooks reuse.
    The config's values, the batch sizes and the teacher are checked before the model loads."""
    validation.check_config(config)
    task = tasks.get_task(config.task)
    mesh = mesh_lib.make_mesh()
    for field in ("batch_size", "eval_batch_size"):
        mesh_lib.check_batch_size(config.train[field], mesh, f"config.train.{field}")
    teacher, teacher_params = teacher_lib.load_teacher(config, task, mesh)
    model, params, tok, tokenizer_source = build_model(config, task)
    train_data, eval_data = load_data(config, task, tok)
    if len(train_data) == 0:
        raise ValueError(f"task {task.name}: the training split is empty")
    steps_per_epoch = pipeline.num_train_batches(train_data, config.train.batch_size)
    # 0 epochs: no training (post-training quantization); schedules still span one step.
    total_steps = math.ceil(config.train.num_epochs * steps_per_epoch)
    config, calibration_report = calibration.resolve_layer_drop(
        config, model, params, train_data, mesh
    )
    context = Context(
        total_steps=max(total_steps, 1),
        model=model.config,
        teacher=teacher.config if teacher else None,
        regression=task.is_regression,
        trains=total_steps > 0,
    )
    method = build_method(config, context)
    params, method_state = method.init(params, rng_streams(config.train.seed))
    tx = method.wrap_optimizer(make_optimizer(config.train, max(total_steps, 1)), params)
    state = TrainState.create(params, tx, config.train.seed, method_state=method_state)
    return Run(
        config=config,
        task=task,
        model=model,
        state=mesh_lib.replicate(state, mesh),
        method=method,
        tokenizer_source=tokenizer_source,
        train_data=train_data,
        eval_data=eval_data,
        mesh=mesh,
        teacher=teacher,
        teacher_params=teacher_params,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        calibration_report=calibration_report,
    )


def say(line: str) -> None:
    """A progress line for people, on stderr (stdout keeps the CLI's final result line)."""
    print(f"bertjax: {line}", file=sys.stderr, flush=True)


def _plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}" + "s" * (count != 1)


def startup_summary(run: Run, workdir: Path, start_step: int) -> str:
    """One line on what a run is about to do: data, steps, devices, method, resume state."""
    config = run.config
    devices = _plural(run.mesh.size, f"{run.mesh.devices.flat[0].platform} device")
    if jax.process_count() > 1:
        devices += f" in {jax.process_count()} processes"
    if not run.total_steps:
        plan = "no training steps (evaluation only)"
    else:
        plan = (
            f"{run.total_steps} steps ({_plural(config.train.num_epochs, 'epoch')} of "
            f"{run.steps_per_epoch} batches of {config.train.batch_size})"
        )
    resume = f"resuming from step {start_step}" if start_step else "new run"
    return (
        f"{run.task.name}, model {config.model.name}, method {method_name(run.method)}: "
        f"{len(run.train_data)} train / {len(run.eval_data)} eval examples, {plan}, "
        f"on {devices}; {resume} in {workdir}" + (" [smoke run]" if config.get("smoke") else "")
    )


def _compile_ahead(compiler, train_step, eval_step, state, step_extra, run, epoch, start_batch,
                   compiled_width, teacher_logits) -> None:  # fmt: skip
    """Queues the train steps of this epoch's other padded lengths (not `compiled_width`),
    then the eval steps, on `compiler`'s background thread (`ahead.py`), shaped exactly as
    the loop will call them."""
    config, mesh = run.config, run.mesh
    abstract_state, extra = ahead.abstract(state), ahead.abstract(step_extra)
    batches = ahead.train_batches_by_width(
        run.train_data, config.train.batch_size, config.train.seed, epoch, start_batch
    )
    for batch in batches:
        index = batch.pop("index")
        if batch["input_ids"].shape[1] == compiled_width:
            continue
        if teacher_logits is not None:
            batch["teacher_logits"] = teacher_logits[index]
        sharded = ahead.abstract(mesh_lib.shard_batch(batch, mesh))
        compiler.submit(train_step, abstract_state, sharded, *extra)
    params, method_state = ahead.abstract((state.params, state.method_state))
    for batch in ahead.eval_batches_by_width(run.eval_data, config.train.eval_batch_size):
        inputs = mesh_lib.shard_batch({k: batch[k] for k in steps.MODEL_INPUTS}, mesh)
        compiler.submit(eval_step, params, method_state, ahead.abstract(inputs))


def train_and_evaluate(config: ConfigDict, workdir: str | Path, *, overwrite: bool = False) -> dict:
    """Fine-tunes `config.model` on `config.task`, evaluates, exports; returns results.

    A workdir holding a run of another config is refused (ValueError) unless
    `overwrite`, which removes that run's outputs first; a finished run of the same
    config is not run again (its results are returned). SIGINT / SIGTERM during
    training save the current step and raise `interrupt.Interrupted`.
    """
    workdir = Path(workdir)
    is_main = distributed.is_main()  # the one process that writes files; all save checkpoints
    report = say if is_main else lambda line: None
    validation.check_config(config)
    finished = workdir_lib.prepare(workdir, config, overwrite=overwrite)
    if finished is not None:
        report(f"{workdir} holds this run, finished (results.json): nothing to do")
        return finished
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    compilation.enable()  # the next run of these shapes loads its executables from disk
    distributed.barrier("workdir prepared")  # no process clears what another has written
    manager = checkpoint.make_manager(workdir, config.checkpoint.keep)
    start_step = manager.latest_step() or 0
    report(
        f"{config.task}, model {config.model.name}: loading model and data"
        + (f" to resume from step {start_step}" if start_step else "")
    )
    run = create_train_state(config)
    config, task, model, method, mesh = run.config, run.task, run.model, run.method, run.mesh
    train_data, eval_data, state = run.train_data, run.eval_data, run.state
    teacher, teacher_params = run.teacher, run.teacher_params
    total_steps, steps_per_epoch = run.total_steps, run.steps_per_epoch
    distilling = config.get("distill") is not None
    cache_teacher = teacher_lib.check_cacheable(config, method.intermediates)
    report(startup_summary(run, workdir, start_step))

    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    fresh = manager.latest_step() is None  # a resumed run restores its calibrated state
    state = checkpoint.restore_latest(manager, state)
    start_step = int(jax.device_get(state.step))
    if start_step:
        report(f"resumed from step {start_step}")
    writer = writers.MetricWriter(workdir, resume_step=start_step, enabled=is_main)
    previous = [r for r in writers.read_jsonl(writer.path) if "elapsed_seconds" in r]
    elapsed = previous[-1]["elapsed_seconds"] if previous else 0.0

    if cache_teacher:
        teacher_logits = teacher_lib.cached_logits(
            teacher,
            teacher_params,
            train_data,
            config.train.eval_batch_size,
            mesh,
            workdir,
            write=is_main,
        )
    train_step = steps.make_train_step(
        model,
        regression=task.is_regression,
        method=method,
        teacher="cached" if cache_teacher else teacher if distilling else None,
    )
    step_extra = (teacher_params,) if distilling and not cache_teacher else ()
    eval_step = steps.make_eval_step(model, method=method)
    with interrupt_lib.deferred_signals() as stop, ahead.Compiler() as compiler:
        if fresh and method.calibration_batches:
            state = calibration.calibrate(
                model,
                method,
                state,
                train_data,
                config.train.batch_size,
                config.train.seed,
                mesh,
                desc=f"{task.name} calibrate",
                disable=not is_main,
            )
            checkpoint.save(manager, state, force=True)  # so that a rerun does not recalibrate
        signum = distributed.agreed_signal(stop.signum)
        if signum:
            manager.wait_until_finished()
            raise interrupt_lib.Interrupted(start_step, signum)
        if start_step < total_steps:
            report("compiling the train step (the first step takes longest)")
        bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=f"{task.name} train",
            disable=not is_main,
            dynamic_ncols=True,
            mininterval=2.0,
            file=sys.stderr,
        )
        history, window_examples, window_start = [], 0.0, time.perf_counter()
        eval_metrics: dict[str, float] = {}
        eval_logits = None
        step = start_step
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            for batch in pipeline.train_batches(
                train_data, config.train.batch_size, config.train.seed, epoch, start_batch=offset
            ):
                index = batch.pop("index")
                if cache_teacher:  # padding rows (index -1) get some row; their weight is 0
                    batch["teacher_logits"] = teacher_logits[index]
                state, values = train_step(state, mesh_lib.shard_batch(batch, mesh), *step_extra)
                step += 1
                if step == start_step + 1 and config.train.get("compile_ahead", True):
                    # After the first step: the state now has the sharding every step sees.
                    _compile_ahead(compiler, train_step, eval_step, state, step_extra, run,
                                   epoch, offset + 1, batch["input_ids"].shape[1],
                                   teacher_logits if cache_teacher else None)  # fmt: skip
                # Every process stops at the same step (a signal may reach only one).
                signum = distributed.agreed_signal(stop.signum)
                stopping = signum is not None
                history.append((step, values))
                window_examples += float(batch["weights"].sum())
                bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0
                log_now = step % config.train.log_every_steps == 0 or step == total_steps
                if log_now or end_of_epoch or (stopping and history):
                    history = jax.device_get(history)
                    _check_finite(history)
                    seconds = time.perf_counter() - window_start
                    elapsed += seconds
                    rate = window_examples / max(seconds, 1e-9)
                    last = history[-1][1]
                    writer.write(
                        step,
                        **_loggable(last),
                        examples_per_second=rate,
                        elapsed_seconds=elapsed,
                        epoch=step / steps_per_epoch,
                    )
                    bar.set_postfix(loss=f"{float(last['loss']):.4f}", ex_s=f"{rate:.1f}")
                    history, window_examples, window_start = [], 0.0, time.perf_counter()
                if step % config.checkpoint.every_steps == 0 or step == total_steps or stopping:
                    checkpoint.save(manager, state, force=step == total_steps or stopping)
                if stopping:
                    bar.close()
                    manager.wait_until_finished()
                    writer.close()
                    raise interrupt_lib.Interrupted(step, signum)
                epoch_done = step // steps_per_epoch
                if (
                    end_of_epoch
                    and epoch_done % config.train.eval_every_epochs == 0
                    or step == total_steps
                ):
                    eval_start = time.perf_counter()
                    eval_metrics, eval_logits = evaluation.evaluate(
                        eval_step, state, eval_data, task, config.train.eval_batch_size, mesh
                    )
                    writer.write(step, prefix="eval_", **eval_metrics)
                    if step < total_steps:  # the final metrics are the run's last line
                        bar.write(
                            f"step {step}: "
                            + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                            file=sys.stderr,
                        )
                    window_start += time.perf_counter() - eval_start
                if step >= total_steps:
                    break
        bar.close()
    manager.wait_until_finished()
    if not eval_metrics:  # resumed after the last step: evaluate the restored model
        eval_metrics, eval_logits = evaluation.evaluate(
            eval_step, state, eval_data, task, config.train.eval_batch_size, mesh
        )
    dynamic = evaluation.extras(
        model, method, state, eval_data, task, config.train.eval_batch_size, mesh
    )
    writer.close()

    examples_seen = min(
        total_steps * config.train.batch_size, config.train.num_epochs * len(train_data)
    )
    final_params, final_config = method.finalize(
        jax.device_get(state.params), jax.device_get(state.method_state), model.config
    )
    if final_config != model.config:
        model = model.clone(config=final_config)
    results = {
        "task": task.name,
        "model": config.model.name,
        "method": method_name(method),
        "metrics": eval_metrics,
        "main_metric": task.main_metric,
        "smoke": bool(config.get("smoke", False)),
        **model_size(final_params),
        **method.report(jax.device_get(state.params), jax.device_get(state.method_state)),
        **run.calibration_report,
        **dynamic,
        "train_seconds": round(elapsed, 2),
        "examples_per_second": round(examples_seen / max(elapsed, 1e-9), 2),
        "steps": total_steps,
        "eval_examples": len(eval_data),
    }
    if config.get("teacher"):
        results["teacher"] = config.teacher
        results.update(
            teacher_lib.teacher_loyalty(
                teacher, teacher_params, task, eval_data, eval_logits, config, mesh
            )
        )
    if is_main:
        if config.export:
            # A stored-form model (int8, factorized) also gets its plain fp32 copy.
            stored = models.convert.has_stored(final_params)
            for name, dequantize in [("export", False)] + [("export_fp32", True)] * stored:
                models.save_pretrained(
                    model,
                    final_params,
                    workdir / name,
                    tokenizer=run.tokenizer_source,
                    labels=task.labels,
                    dequantize=dequantize,
                )
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
