#!/usr/bin/env bash
# Extra teacher fine-tunes for the tasks below the PyTorch reference: other seeds,
# learning rates and epochs. Each run is its own workdir under RUNS_DIR (resumable).
#   bash benchmarks/teacher_trials.sh [RUNS_DIR]
set -eu
runs=${1:-runs/teacher-trials}
mkdir -p "$runs"
trial() {  # name task epochs lr seed
  local dir="$runs/$1"
  [ -f "$dir/results.json" ] && return 0
  python -m bertjax.main --config=configs/finetune.py:model=minilm-l6-h384,task=$2 \
    --config.train.num_epochs=$3 --config.train.learning_rate=$4 --config.train.seed=$5 \
    --config.checkpoint.every_steps=100 --config.export=False \
    --workdir="$dir" > "$dir.log" 2>&1
}
trial cola-lr1e-4-ep5 cola 5 1e-4 0
trial mrpc-lr1e-4-seed1 mrpc 3 1e-4 1
trial mrpc-lr5e-5 mrpc 3 5e-5 0
trial cola-lr5e-5-ep5 cola 5 5e-5 0
python -m bertjax.report "$runs"
