#!/usr/bin/env bash
# Fine-tunes the minilm-l6-h384 teacher on the five GLUE tasks with the default
# config (3 epochs; SST-2 one epoch). Resumable: re-running continues each run.
#   bash benchmarks/teacher_runs.sh [RUNS_DIR]
set -eu
runs=${1:-runs/teacher}
mkdir -p "$runs"
for task in mrpc rte stsb cola sst2; do
  epochs=3
  [ "$task" = sst2 ] && epochs=1
  [ -f "$runs/$task/results.json" ] && continue
  python -m bertjax.main --config=configs/finetune.py:model=minilm-l6-h384,task=$task \
    --config.train.num_epochs=$epochs --config.checkpoint.every_steps=100 \
    --workdir="$runs/$task" > "$runs/$task.log" 2>&1
done
python -m bertjax.report "$runs"
