"""Command line: `python -m bertjax.main --config=configs/x.py:args --workdir=DIR`.

Fields of the config can be overridden with `--config.train.learning_rate=5e-5`.
Errors in the config, the data or the model end the run with one line naming
the culprit and a non-zero exit status.
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from bertjax.train.loop import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, with an optional `:arg`.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        results = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, KeyError, FileNotFoundError, FloatingPointError) as err:
        print(f"bertjax: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(" ".join(f"{k}={v:.4f}" for k, v in results["metrics"].items()))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
