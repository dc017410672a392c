#!/usr/bin/env bash
# Sets up .venv if needed, then runs a small real experiment: the MiniLM-L6
# checkpoint in ../shared/models fine-tuned on the first 2,000 SST-2 training sentences
# from ../shared/data for one epoch, evaluated on the full dev set (872 sentences; about
# a minute on 2 cores once set up). SST-2 rather than a small pair task: one short epoch
# already lifts it well above the majority class (0.509), so the demo shows learning.
#   bash scripts/demo.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workdir=${1:-runs/demo-sst2}
.venv/bin/python -m bertjax.main \
  --config=configs/finetune.py:model=minilm-l6-h384,task=sst2 \
  --config.data.train_limit=2000 --config.train.num_epochs=1 \
  --workdir="$workdir"
.venv/bin/python -m bertjax.report "$workdir"
