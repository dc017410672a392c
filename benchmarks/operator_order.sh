#!/usr/bin/env bash
# Issue-16 item 5, the operator-order study on one task: five operators alone and every
# pair in both orders, A->B meaning B applied to A's export (`model=<A>/export`).
# Operators (names of the runs: A, or A-B for B after A):
#   prune    structured: heads -50 %, FFN neurons -50 %; 1 epoch, lr 5e-5
#   int8     PTQ W8A8, weights stored in int8, dynamic activation scales; no training
#   kd       logit KD from the task teacher into ceil(L/2) layers of the model it is given
#            (6 -> 3, DistilBERT-style every other layer; 3 -> 2); 2 epochs, lr 1e-4
#   drop     drop the top floor(L/2) layers (6 -> 3; 3 -> 2), then 1 epoch, lr 5e-5
#   lowrank  truncated SVD of every encoder kernel, factors of at most half its values
#            (ratio 0.5), then 1 epoch, lr 5e-5
# The depth operators halve what they are given, so kd->drop and drop->kd both end at 2
# layers. int8 first: an int8-stored export cannot be trained (integer weights), so
# int8->B is B with W8A8 fake-quant from its first step (configs/qat_first.py, run
# int8-B.qat), then int8 storage of its export (run int8-B, no training).
# Every run reports label loyalty to the teacher. Resumable (grid_common.sh): runs with a
# results.json are skipped, checkpoints of finished runs deleted; a chain whose first run
# is missing is skipped with a line. Table and plot: benchmarks/operator_order.py.
#   TEACHER=DIR bash benchmarks/operator_order.sh [TASK] [RUNS_DIR] [ITEM...]
# Items, run in the order given: a run's name (`drop`, `kd-drop`, `int8-drop`) or a group:
# singles (int8 drop kd prune lowrank: the cheap ones first), then_int8 (X-int8), pairs
# (both orders of the training operators' pairs; env PAIRS: "A:B ..."), int8_first
# (int8-X); default: all four groups.
set -eu
task=${1:-mrpc}
runs=${2:-runs/oporder/$task}
shift $(( $# > 2 ? 2 : $# )) || true
items=${*:-singles then_int8 pairs int8_first}
grid_flags() { :; }
source "$(dirname "$0")/grid_common.sh"

layers() { python -c "import json, sys; print(json.load(open(sys.argv[1]))['num_hidden_layers'])" "$1/config.json"; }

# apply OP NAME MODEL [qat]: run NAME, operator OP applied to the export MODEL (with
# W8A8 fake-quant throughout when `qat`).
apply() {
  local op=$1 name=$2 model=$3 qat=${4:-} n config arg
  [ -f "$runs/$name/results.json" ] && return 0
  [ -f "$model/config.json" ] || { echo "skip $name: no model at $model"; return 0; }
  n=$(layers "$model")
  local flags=(--config.train.num_epochs=1 --config.train.learning_rate=5e-5)
  case $op in
  prune) config=prune_structured arg="model=$model,task=$task,heads=0.5,ffn=0.5" ;;
  drop) config=layer_drop arg="model=$model,task=$task,drop=$((n / 2)),strategy=top" ;;
  lowrank) config=lowrank arg="model=$model,task=$task,rank=0,ratio=0.5" ;;
  kd)
    config=distill_kd arg="task=$task,teacher=$teacher,student=$model"
    # the teacher's logits predicted once per example, not every step (same training)
    flags=(--config.model.truncate_to=$(((n + 1) / 2)) --config.train.num_epochs=2
      --config.distill.cache_teacher=true) ;;
  int8) config=quant_ptq arg="model=$model,task=$task,int8=true" flags=() ;;
  *) echo "unknown operator $op"; exit 2 ;;
  esac
  if [ -n "$qat" ]; then
    run "$name" "configs/qat_first.py:then=$config,$arg" "${flags[@]}"
  else
    run "$name" "configs/$config.py:$arg" "${flags[@]}"
  fi
}

# one NAME: a single operator on the teacher, A-B (B on A's export), int8-B (QAT, then storage)
one() {
  local a=${1%-*} b=${1#*-}
  case $1 in
  *-*) if [ "$a" = int8 ]; then
         apply "$b" "$1.qat" "$teacher" qat
         apply int8 "$1" "$runs/$1.qat/export"
       else
         apply "$b" "$1" "$runs/$a/export"
       fi ;;
  *) apply "$1" "$1" "$teacher" ;;
  esac
}

training="drop kd prune lowrank"
pairs=${PAIRS:-"kd:drop prune:drop drop:lowrank prune:kd kd:lowrank prune:lowrank"}
for item in $items; do
  case $item in
  singles) for op in int8 $training; do one "$op"; done ;;
  then_int8) for op in $training; do one "$op-int8"; done ;;
  pairs) for pair in $pairs; do one "${pair%:*}-${pair#*:}"; one "${pair#*:}-${pair%:*}"; done ;;
  int8_first) for op in $training; do one "int8-$op"; done ;;
  prune | int8 | kd | drop | lowrank | *-*) one "$item" ;;
  *) echo "unknown item $item"; exit 2 ;;
  esac
done
python benchmarks/operator_order.py "$runs" --teacher "$teacher" || true
