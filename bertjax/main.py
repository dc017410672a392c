"""Command line: `python -m bertjax.main --config=configs/x.py:args --workdir=DIR`.

Fields of the config can be overridden with `--config.train.learning_rate=5e-5`.
Errors in the config, the data or the model end the run with one line naming
the culprit and a non-zero exit status.
"""

import logging
import sys

from absl import flags
from ml_collections import config_flags

from bertjax.train.loop import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, with an optional `:arg`.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])


def _one_line(err: BaseException) -> str:
    """The informative line of an error (config-file errors embed a traceback)."""
    text = str(err).replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [lines[-1]] if "Traceback" in text else lines
    return " ".join(line.strip("'\"") for line in lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"bertjax: error: unexpected arguments: {argv[1:]}")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if FLAGS.distributed:
        import jax

        jax.distributed.initialize()
    try:
        results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, KeyError, FileNotFoundError, FloatingPointError) as err:
        print(f"bertjax: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    print(" ".join(f"{k}={v:.4f}" for k, v in results["metrics"].items()))


def run(argv: list[str] | None = None) -> None:
    """Parses flags (config file and overrides), then trains; bad flags exit 2."""
    try:
        argv = FLAGS(sys.argv if argv is None else argv)
        FLAGS.config.keys()  # loads the config file now, so its errors land here
    except Exception as err:  # noqa: BLE001  (flag and config-override errors alike)
        print(f"bertjax: error: bad command line: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    main(argv)


if __name__ == "__main__":
    run()
