#!/usr/bin/env bash
# Issue-4 results grid on one task: students of N = 3 and 2 layers distilled from the
# fine-tuned teacher (runs/teacher/<task>/export, see teacher_runs.sh). Every student starts
# from the teacher's layers (DistilBERT-style: layers round(i * 6 / N)), except Theseus
# whose successors start as copies of the teacher's first N layers (the authors' code).
# All runs: $EPOCHS epochs (default 2), default lr 1e-4, seed 0; loyalty to the teacher.
# Resumable: runs with a results.json are skipped.
# A student that is not a number is a model name (e.g. minilm-l3-h384, a real pretrained
# 3-layer model): its runs are named after it and start from its own weights (no Theseus).
# A random size (e.g. mini: 4 x 256, randomly initialised) uses the teacher's tokenizer.
#   bash benchmarks/distill_grid.sh [TASK] [RUNS_DIR] [N | MODEL ...]
# Env: METHODS (default: alone kd tinybert-uniform emd theseus tinybert-top tinybert-bottom).
set -eu
task=${1:-mrpc}
runs=${2:-runs/distill/$task}
shift $(( $# > 2 ? 2 : $# )) || true
sizes=${*:-3 2}
grid_flags() { echo "--config.train.num_epochs=${EPOCHS:-2}"; }
source "$(dirname "$0")/grid_common.sh"

common="task=$task,teacher=$teacher"
for n in $sizes; do
  if [[ $n =~ ^[0-9]+$ ]]; then
    student="teacher:$n" name="l$n" alone=("configs/finetune.py:model=$teacher,task=$task" --config.model.truncate_to="$n")
  else
    student=$n name=$n alone=("configs/finetune.py:model=$n,task=$task")
    case $n in tiny | mini | small | medium | base) alone+=(--config.model.tokenizer="$teacher") ;; esac
  fi
  for m in ${METHODS:-alone kd tinybert-uniform emd theseus tinybert-top tinybert-bottom}; do
    case $m in
    alone) run "$name-alone" "${alone[@]}" ;;
    kd) run "$name-kd" "configs/distill_kd.py:$common,student=$student" ;;
    tinybert-*) run "$name-$m" "configs/distill_tinybert.py:$common,student=$student,map=${m#tinybert-}" ;;
    emd) run "$name-emd" "configs/distill_emd.py:$common,student=$student" ;;
    theseus)
      if [ "$student" = "teacher:$n" ]; then
        run "$name-theseus" "configs/distill_theseus.py:$common,successors=$n"
      else
        echo "skip $name-theseus: Theseus successors are copies of teacher layers"
      fi ;;
    *) echo "unknown method $m"; exit 2 ;;
    esac
  done
done
python -m bertjax.report "$runs" --reference "$(dirname "$teacher")" || true
