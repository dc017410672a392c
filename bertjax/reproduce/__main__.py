"""CLI of `bertjax.reproduce` (see the package doc)."""

import argparse
import datetime
import json
import os
import platform
import sys
import traceback
from pathlib import Path

from bertjax.reproduce import cells as cells_lib
from bertjax.reproduce import claims as claims_lib
from bertjax.reproduce import grid, restore, table


def say(line: str) -> None:
    print(f"reproduce: {line}", file=sys.stderr, flush=True)


def write_outputs(out: Path, args, budget, collected, cell_list, failures) -> Path:
    """table.md, results.json and plots.png from what has finished so far."""
    out.mkdir(parents=True, exist_ok=True)
    claim_lines, records = table.claims_table(
        collected, claims_lib.claims(budget.student_layers, budget.drop)
    )
    tasks = [t for t in grid.TASKS if collected.get(t)]  # committed tasks of other runs too
    done = [t for t in tasks if all(c.name in collected[t] for c in cell_list)]
    command = f"python -m bertjax.reproduce --budget {budget.name} --seeds {args.seeds}"
    if args.tasks != list(grid.TASKS):
        command += " --tasks " + " ".join(args.tasks)
    if args.families != list(grid.FAMILIES):
        command += " --families " + " ".join(args.families)
    if args.cells:
        command += " --cells " + " ".join(args.cells)
    lines = [
        f"# Reproduction: budget `{budget.name}`, {args.seeds} seed(s)",
        "",
        f"Made by `{command}` (written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} "
        f"UTC; {platform.processor() or platform.machine()}, {os.cpu_count()} cores).",
        f"Tasks with every cell finished: {', '.join(done) or 'none yet'}. "
        + (f"SST-2 trains on its first {budget.train_limits['sst2']} sentences. "
           if "sst2" in budget.train_limits else "")
        + ("**Smoke budget: tiny random models on 64 examples; the numbers mean nothing.**"
           if budget.smoke else ""),
        "Latency: seed 0's export, seq 128, best of 5 round-robin calls beside the seed-0 "
        "teacher run by PyTorch fp32 in the same process. Peer rows: that teacher in "
        "PyTorch fp32 and ONNX Runtime dynamic int8 (bertjax/reproduce/peers.py says what "
        "is measured). Early-exit and TR-BERT rows: the latency is their export run as a "
        "plain model (every layer, every token); the early-exit score is the last layer's, "
        "TR-BERT's is with its token selection. Their dynamic speed-ups are in results.json "
        "(`early_exit.sweep`: score and layer speed-up per threshold / patience; "
        "`flops_ratio`, tokens kept) and, measured, from benchmarks/early_exit.py and "
        "benchmarks/token_reduction.py.",
        "",
    ]  # fmt: skip
    if failures:
        lines += ["Failed cells (see their logs): " + ", ".join(failures), ""]
    for task in tasks:
        lines += table.task_table(task, collected[task], cell_list)
    star = table.north_star(collected, cell_list)
    lines += table.north_star_table(star)
    lines += ["## Claims", "", *claim_lines, "", claims_lib.__doc__.strip(), ""]
    (out / "table.md").write_text("\n".join(lines))
    (out / "results.json").write_text(
        json.dumps({"budget": budget.name, "runs": collected, "claims": records,
                    "north_star": star}, indent=1) + "\n"
    )  # fmt: skip
    table.plot(collected, cell_list, out / "plots.png")
    return out / "table.md"


def catch_up(tasks, cell_list, budget, runs: Path, max_load: float) -> int:
    """Times the finished seed-0 cells whose timing was deferred (cells.measure_pending),
    as far as the load allows; returns how many still wait."""
    waiting, kept = 0, grid.starts(cell_list)
    for task in tasks:
        for cell in cell_list:
            if (cells_lib.workdir(runs, task, cell, 0) / "results.json").exists():
                keep = cell.name in kept
                waiting += not cells_lib.measure_pending(cell, budget, task, runs, max_load, keep)
    return waiting


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bertjax.reproduce", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--budget", choices=sorted(grid.BUDGETS), default="small")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(grid.TASKS), choices=grid.TASKS)
    parser.add_argument("--families", nargs="+", default=list(grid.FAMILIES),
                        choices=grid.FAMILIES)  # fmt: skip
    parser.add_argument("--cells", nargs="+", default=[],
                        help="run only these cells (and the teacher and cells they start "
                        "from); the tables keep every cell")  # fmt: skip
    parser.add_argument("--runs", type=Path, help="default runs/reproduce/BUDGET")
    parser.add_argument("--out", type=Path, help="default reproduction/BUDGET")
    parser.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    parser.add_argument("--max-load", type=float, default=cells_lib.MAX_LOAD,
                        help="time latency only at or below this 1-minute load average; "
                        "above it the timing waits (default %(default)s)")  # fmt: skip
    parser.add_argument("--latency-only", action="store_true",
                        help="train nothing: time the finished cells still waiting, then "
                        "rewrite the tables")  # fmt: skip
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    budget = grid.BUDGETS[args.budget]
    if args.no_latency:
        budget = grid.dataclasses.replace(budget, latency=False)
    runs = args.runs or Path("runs/reproduce") / budget.name
    out = args.out or Path("reproduction") / budget.name
    cell_list = grid.cells(budget, args.families)
    try:
        to_run = grid.select(cell_list, args.cells) if args.cells else cell_list
    except ValueError as error:
        parser.error(str(error))
    failures = []
    if args.latency_only:
        waiting = catch_up(args.tasks, cell_list, budget, runs, args.max_load)
        collected = restore.merge(table.collect(runs, args.tasks, cell_list, args.seeds),
                                  restore.load(out / "results.json"))  # fmt: skip
        say(f"tables: {write_outputs(out, args, budget, collected, cell_list, failures)}")
        say(f"{waiting} cell(s) still wait for a quiet machine" if waiting else "all timed")
        return 1 if waiting else 0
    committed = restore.load(out / "results.json")
    restored = restore.restore(committed, runs, args.tasks, to_run, args.seeds)
    if restored:
        say(f"{restored} finished run(s) restored from {out / 'results.json'}")
    for directory in restore.reopen(runs, args.tasks, to_run, args.seeds):
        say(f"{directory}: finished without its export, which a run to come needs: retrains")
    total = len(args.tasks) * len(to_run) * args.seeds
    kept = grid.starts(cell_list)  # cells others start from: their exports stay
    done = 0
    # Seed-major: every task's seed 0 first (one seed of each task is worth more than three
    # of one), and a lost runs directory costs the teachers of one seed, not of all.
    for seed in range(args.seeds):
        for task in args.tasks:
            for cell in to_run:
                done += 1
                name = f"{task}/{cell.name}/seed{seed}"
                say(f"[{done}/{total}] {name}")
                try:
                    cells_lib.run(cell, budget, task, seed, runs, args.max_load,
                                  keep_export=cell.name in kept)  # fmt: skip
                except KeyboardInterrupt:
                    say(f"interrupted at {name}: rerun the same command to resume")
                    return 130
                except Exception:  # noqa: BLE001  (one failed cell must not stop the grid)
                    failures.append(name)
                    log = cells_lib.workdir(runs, task, cell, seed) / "error.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    log.write_text(traceback.format_exc())
                    say(f"FAILED {name} (traceback in {log})")
                if cells_lib.quiet(args.max_load):  # (each deferral was said by its cell)
                    catch_up([task], cell_list, budget, runs, args.max_load)
                # After every run, so an interrupted grid leaves its tables.
                collected = restore.merge(
                    table.collect(runs, args.tasks, cell_list, args.seeds), committed
                )
                path = write_outputs(out, args, budget, collected, cell_list, failures)
            say(f"{task} seed {seed} done: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
