#!/usr/bin/env bash
# Sets up .venv if needed, then runs the default test suite (CI runs exactly this).
#   bash scripts/test.sh [pytest args]     e.g. -m slow for the long checks
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BERTJAX_CACHE=${BERTJAX_CACHE:-$PWD/.cache/bertjax}
# --durations: the slowest tests show in every CI log (the suite must stay under ~15 min).
exec .venv/bin/python -m pytest -q --durations=10 "$@"
