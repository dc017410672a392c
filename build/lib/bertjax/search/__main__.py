"""`python -m bertjax.search {latency,search,extract}`: AutoTinyBERT after the supernet.

  # measured latency of extracted sub-models -> a fitted predictor, held-out error
  python -m bertjax.search latency --supernet runs/supernet --out runs/search/latency.json
  # evolutionary search inside a latency window (predicted, batch --batch) around the
  # latency of --like (e.g. the 3-layer teacher), fitness: one-shot on a task's dev inputs
  python -m bertjax.search search --supernet runs/supernet \
      --predictor runs/search/latency.json --like 3,384,12,1536 --out runs/search/winner
  # a sub-model (layers,hidden,heads,ffn) of the supernet as a standalone HF-layout model
  python -m bertjax.search extract --supernet runs/supernet --arch 3,256,8,768 --out DIR

`--supernet` is a `configs/supernet.py` run's workdir (its `export/`, `projection.npz`).
Progress goes to stderr, one JSON summary to stdout and to `--out`.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bertjax import models
from bertjax.models import submodel
from bertjax.search import evolution
from bertjax.search.latency import Predictor, measure
from bertjax.search.space import Space


def say(line: str) -> None:
    print(f"bertjax.search: {line}", file=sys.stderr, flush=True)


def parse_arch(text: str) -> submodel.Arch:
    values = [int(v) for v in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"arch {text!r}: want layers,hidden,heads,ffn")
    return submodel.Arch(*values)


def export_dir(directory: Path) -> Path:
    """A run's `export/`, or `directory` itself when it is a checkpoint (e.g. the teacher:
    latency depends on the architecture only)."""
    return directory / "export" if (directory / "export").is_dir() else directory


def load_supernet(directory: Path):
    return models.load_pretrained(export_dir(directory), head=None)


def extract(supernet: Path, arch: submodel.Arch, out: Path) -> Path:
    """Writes the sub-model `arch` of the supernet in HF layout (with the tokenizer)."""
    model, params = load_supernet(supernet)
    small, _ = models.build(submodel.sub_config(model.config, arch))
    sliced = submodel.slice_params(params, model.config, arch)
    return models.save_pretrained(small, sliced, out, tokenizer=str(export_dir(supernet)))


def refit(args) -> dict:
    """The predictor refitted on the measurements a `latency` run saved (`--measured`)."""
    saved = json.loads(Path(args.measured).read_text())
    rows = saved["measurements"]
    archs = [submodel.Arch(**row["arch"]) for row in rows]
    ms = [{int(b): v for b, v in row["ms"].items()} for row in rows]
    held = [row["held_out"] for row in rows]
    fit = [(a, m) for a, m, h in zip(archs, ms, held, strict=True) if not h]
    test = [(a, m) for a, m, h in zip(archs, ms, held, strict=True) if h]
    predictor = Predictor.fit(*zip(*fit, strict=True), saved["head_dim"], saved["seq_len"])
    predictor.save(args.out)
    return {**saved, "predictor": str(args.out),
            "fit_error": predictor.errors(*zip(*fit, strict=True)),
            "held_out_error": predictor.errors(*zip(*test, strict=True))}  # fmt: skip


def latency_command(args) -> dict:
    if args.measured is not None:
        return refit(args)
    model, params = load_supernet(args.supernet)
    space = Space()
    rng = np.random.default_rng(args.seed)
    archs = [space.largest, space.smallest]
    archs += [a for a in args.include]
    while len(archs) < args.archs:
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    fit_archs, held_out = archs[: len(archs) - args.held_out], archs[len(archs) - args.held_out :]
    measured = []
    for i, arch in enumerate(archs):
        ms = measure(params, model.config, arch, args.batch_sizes, args.seq, args.repeats)
        measured.append(ms)
        say(f"{i + 1}/{len(archs)} {arch}: " + ", ".join(f"b{b} {v:.2f} ms" for b, v in ms.items()))
    head_dim = model.config.head_dim
    predictor = Predictor.fit(fit_archs, measured[: len(fit_archs)], head_dim, args.seq)
    predictor.save(args.out)
    summary = {
        "predictor": str(args.out),
        "head_dim": head_dim,
        "seq_len": args.seq,
        "fit_archs": len(fit_archs),
        "held_out_archs": len(held_out),
        "fit_error": predictor.errors(fit_archs, measured[: len(fit_archs)]),
        "held_out_error": predictor.errors(held_out, measured[len(fit_archs) :]),
        "measurements": [
            {"arch": a.as_dict(), "ms": m, "held_out": a in held_out}
            for a, m in zip(archs, measured, strict=True)
        ],
    }
    Path(args.out).with_suffix(".measured.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def search_command(args) -> dict:
    from bertjax.search.oneshot import OneShot

    predictor = Predictor.load(args.predictor)
    if args.like is not None:
        high = predictor.predict(args.like, args.batch)
        window = ((1 - args.tolerance) * high, high)
    else:
        window = tuple(args.window)
    say(f"latency window (batch {args.batch}, seq {predictor.seq_len}): "
        f"{window[0]:.2f}-{window[1]:.2f} ms predicted")  # fmt: skip
    fitness = OneShot(
        args.supernet, args.teacher, task=args.task, limit=args.limit, seq_len=args.eval_seq
    )
    result = evolution.evolve(
        Space(),
        fitness,
        lambda arch: predictor.predict(arch, args.batch),
        window,
        population=args.population,
        generations=args.generations,
        parents=args.parents,
        mutation_probability=args.mutation,
        seed=args.seed,
        on_generation=lambda g, r: say(f"generation {g}: best {r['best']} fitness "
                                       f"{r['fitness']:.4f} ({r['evaluated']} evaluated)"),
    )  # fmt: skip
    out = extract(args.supernet, result.best, args.out)
    summary = {
        "winner": result.best.as_dict(),
        "fitness": result.best_fitness,
        "predicted_ms": predictor.predict(result.best, args.batch),
        "window_ms": list(window),
        "batch": args.batch,
        "task": args.task,
        "evaluated": len(result.scores),
        "history": result.history,
        "export": str(out),
    }
    if args.like is not None:
        summary["like"] = args.like.as_dict()
        summary["like_fitness"] = fitness(args.like)
    (Path(args.out) / "search.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bertjax.search", description=__doc__.split("\n")[0]
    )
    commands = top.add_subparsers(dest="command", required=True)
    lat = commands.add_parser("latency", help="measure sub-models, fit the latency predictor")
    lat.add_argument("--supernet", type=Path, help="a supernet run, or any full-size checkpoint")
    lat.add_argument("--measured", type=Path, help="refit on a saved .measured.json instead")
    lat.add_argument("--out", type=Path, required=True, help="predictor JSON")
    lat.add_argument("--archs", type=int, default=12, help="architectures measured in all")
    lat.add_argument("--held-out", type=int, default=4, help="of them, not used in the fit")
    lat.add_argument("--include", type=parse_arch, nargs="*", default=[],
                     help="architectures measured besides the random ones (fitted)")  # fmt: skip
    lat.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                     default=[1, 32])  # fmt: skip
    lat.add_argument("--seq", type=int, default=128)
    lat.add_argument("--repeats", type=int, default=5)
    lat.add_argument("--seed", type=int, default=0)
    find = commands.add_parser("search", help="evolutionary search in a latency window")
    find.add_argument("--supernet", type=Path, required=True)
    find.add_argument("--predictor", type=Path, required=True)
    find.add_argument("--teacher", default="minilm-l6-h384")
    find.add_argument("--out", type=Path, required=True, help="the winner's HF-layout export")
    find.add_argument("--batch", type=int, default=32, help="batch size of the latency constraint")
    find.add_argument("--like", type=parse_arch, help="window: [1 - tolerance, 1] x its latency")
    find.add_argument("--tolerance", type=float, default=0.15)
    find.add_argument("--window", type=float, nargs=2, metavar=("LOW_MS", "HIGH_MS"))
    find.add_argument("--task", default="stsb", help="whose dev inputs the one-shot fitness uses")
    find.add_argument("--limit", type=int, default=128, help="dev examples for the fitness")
    find.add_argument("--eval-seq", type=int, default=64)
    find.add_argument("--population", type=int, default=16)
    find.add_argument("--generations", type=int, default=4)
    find.add_argument("--parents", type=int, default=4)
    find.add_argument("--mutation", type=float, default=0.5)
    find.add_argument("--seed", type=int, default=0)
    ext = commands.add_parser("extract", help="a sub-model as a standalone HF-layout model")
    ext.add_argument("--supernet", type=Path, required=True)
    ext.add_argument("--arch", type=parse_arch, required=True)
    ext.add_argument("--out", type=Path, required=True)
    return top


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.command == "latency":
        summary = latency_command(args)
    elif args.command == "search":
        if args.like is None and args.window is None:
            parser().error("search needs --like or --window")
        summary = search_command(args)
    else:
        summary = {"export": str(extract(args.supernet, args.arch, args.out))}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
