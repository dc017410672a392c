# Sourced by the grid scripts after they set `task` and `runs`: checks the teacher export and
# defines `run NAME CONFIG[:ARGS] [FLAGS...]`, which skips runs that have a results.json,
# logs to $runs/NAME.log, reports loyalty to the teacher, and adds the flags printed by the
# script's `grid_flags` function (evaluated per run, so `LR=... run ...` works).
# A finished run's checkpoints are deleted (results.json, export/ and logs stay): they only
# serve to resume an interrupted run, and a grid's would fill the disk.
# SST-2 trains on its first $TRAIN_LIMIT examples (default 8000 of 67,349: CPU budget);
# TRAIN_LIMIT=0 trains on everything.
teacher=${TEACHER:-$(pwd)/runs/teacher/$task/export}
[ -d "$teacher" ] || { echo "no teacher export at $teacher (run benchmarks/teacher_runs.sh)"; exit 2; }
mkdir -p "$runs"
limit=${TRAIN_LIMIT:-$([ "$task" = sst2 ] && echo 8000 || echo 0)}

run() {
  local name=$1 config=$2; shift 2
  [ -f "$runs/$name/results.json" ] && return 0
  echo "$(date +%T) $name"
  # shellcheck disable=SC2046  # grid_flags prints plain space-separated flags
  python -m bertjax.main --config="$config" --config.teacher="$teacher" \
    --config.checkpoint.every_steps=50 \
    --config.data.train_limit="$limit" $(grid_flags) --workdir="$runs/$name" "$@" \
    > "$runs/$name.log" 2>&1 || { echo "  FAILED (see $runs/$name.log)"; return 0; }
  [ -f "$runs/$name/results.json" ] && rm -rf "$runs/$name/checkpoints"
  return 0
}
