#!/usr/bin/env bash
# Sets up .venv if needed, then runs a small real experiment: the MiniLM-L6
# checkpoint in ../shared/models fine-tuned on 1,000 MRPC training pairs from
# ../shared/data for one epoch, evaluated on the full dev set (a few minutes on 2 cores).
#   bash scripts/demo.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workdir=${1:-runs/demo-mrpc}
.venv/bin/python -m bertjax.main \
  --config=configs/finetune.py:model=minilm-l6-h384,task=mrpc \
  --config.data.train_limit=1000 --config.train.num_epochs=1 \
  --workdir="$workdir"
.venv/bin/python -m bertjax.report "$workdir"
