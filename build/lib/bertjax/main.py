"""Command line: `python -m bertjax.main --config=configs/x.py:args --workdir=DIR`.

Fields of the config can be overridden with `--config.train.learning_rate=5e-5`.
`--help` lists the configs, tasks and models; `--print_config` (or `--help` with
a `--config`) prints the resolved config without running. Errors in the config,
the data or the model end the run with one line naming the culprit and exit
status 2; SIGINT / SIGTERM save the current step and end with one line (and
128 + the signal number). A multi-process run (several hosts, or several processes on
one machine) runs this command once per process with `--coordinator_address`,
`--num_processes` and `--process_id` (or `--distributed` where JAX detects them):
`bertjax/train/distributed.py`.
"""

import logging
import re
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, with an optional `:arg`.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_bool(
    "overwrite", False, "Remove the workdir's run first (when it has another config)."
)
flags.DEFINE_bool("print_config", False, "Print the resolved config and exit.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-process run: jax.distributed.initialize() (auto-detected on TPU, Slurm, Open MPI).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process run: HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS).",
)
flags.DEFINE_integer(
    "num_processes", None, "Multi-process run: how many processes (default $JAX_NUM_PROCESSES)."
)
flags.DEFINE_integer(
    "process_id", None, "Multi-process run: this process, 0..N-1 (default $JAX_PROCESS_ID)."
)
DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id")

HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "-?")
USAGE = """\
usage: python -m bertjax.main --config=configs/NAME.py[:KEY=VALUE,...] --workdir=DIR
           [--config.FIELD=VALUE ...] [--overwrite] [--print_config]
           [--distributed | --coordinator_address=HOST:PORT --num_processes=N --process_id=I]

  e.g. python -m bertjax.main --config=configs/finetune.py:model=minilm-l6-h384,task=rte \\
           --workdir=runs/rte --config.train.learning_rate=5e-5
  Re-running the same command resumes an interrupted run and skips a finished one.
  --config=configs/NAME.py --help prints that config's fields (what --config.FIELD sets)."""


def _unquote(text: str) -> str:
    """`text` without a pair of quotes around all of it (how KeyError prints); quotes
    inside (`flag 'help'`) stay."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def one_line(err: BaseException) -> str:
    """The informative line of an error (config-file errors embed a traceback: its
    last line, without the exception's class name)."""
    text = _unquote(str(err).strip()).replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback" in text:
        lines = [re.sub(r"^\w+(Error|Exception): ", "", lines[-1])]
    return " ".join(lines)


def help_text() -> str:
    """Usage, the flags, and what there is to run (configs, tasks, models)."""
    from bertjax import catalog

    names = ("config", "workdir", "overwrite", "print_config", "distributed", *DISTRIBUTED_FLAGS)
    described = [f"  --{name:<21}{FLAGS[name].help}" for name in names]
    return "\n".join([USAGE, "", "flags:", *described, "", catalog.catalog_text()]) + "\n"


def result_line(results: dict) -> str:
    """The run's last line: its dev metrics, marked when they come from a smoke run."""
    line = " ".join(f"{k}={v:.4f}" for k, v in results["metrics"].items())
    if results.get("smoke"):
        line += " (smoke run: tiny data, checks that it runs; not a result)"
    return line


def _fail(message: str) -> None:
    print(f"bertjax: error: {message}", file=sys.stderr)
    sys.exit(2)


def start_distributed() -> None:
    """`jax.distributed` for a multi-process run (before anything touches devices):
    with `--distributed`, or when any of `DISTRIBUTED_FLAGS` is set (flag or its
    environment variable); a single-process run otherwise."""
    from bertjax.train import distributed

    settings = {name: FLAGS[name].value for name in DISTRIBUTED_FLAGS}
    for name, value in settings.items():
        if value is None:
            settings[name] = distributed.from_environment(name)
    if FLAGS.distributed or any(value is not None for value in settings.values()):
        distributed.initialize(**settings)


def main(argv: list[str]) -> None:
    """Trains `FLAGS.config` in `FLAGS.workdir` (flags already parsed)."""
    if len(argv) > 1:
        _fail(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from bertjax.pretrain.general import general_distill, is_general
    from bertjax.train.interrupt import Interrupted
    from bertjax.train.loop import train_and_evaluate

    try:
        start_distributed()
    except ValueError as err:
        _fail(one_line(err))
    try:
        # A config with a `corpus` block distils on unlabeled text (no task, no head).
        run_config = general_distill if is_general(FLAGS.config) else train_and_evaluate
        results = run_config(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    except (ValueError, KeyError, FileNotFoundError, FloatingPointError) as err:
        _fail(one_line(err))
    except Interrupted as interrupted:
        print(f"bertjax: {interrupted}", file=sys.stderr)
        sys.exit(interrupted.exit_status)
    except KeyboardInterrupt:  # before training began, or during the export
        print("bertjax: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    print(result_line(results))


def run(argv: list[str] | None = None) -> None:
    """Parses flags (config file and overrides), then trains; bad flags exit 2."""
    argv = list(sys.argv if argv is None else argv)
    wants_help = any(arg in HELP_FLAGS for arg in argv[1:])
    argv = [arg for arg in argv if arg not in HELP_FLAGS]
    if wants_help and not any(re.match(r"--?config(=|$)", arg) for arg in argv[1:]):
        print(help_text(), end="")
        sys.exit(0)
    try:
        argv = FLAGS(argv)
        if FLAGS.config is not None:
            FLAGS.config.keys()  # loads the config file now, so its errors land here
    except Exception as err:  # noqa: BLE001  (flag and config-override errors alike)
        _fail(f"bad command line: {one_line(err)}")
    if FLAGS.config is None:
        _fail("--config is required (--help lists the configs)")
    if wants_help or FLAGS.print_config:
        print(FLAGS.config, end="")
        sys.exit(0)
    if not FLAGS.workdir:
        _fail("--workdir is required (where checkpoints, logs and results go)")
    main(argv)


if __name__ == "__main__":
    run()
