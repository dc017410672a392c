#!/usr/bin/env bash
# Creates .venv (Python 3.11) with bertjax and its dev tools; quick when already done.
# torch==2.13.0 is pinned so pip takes the local CPU wheel, never a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.bertjax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # ONNX export; --no-deps: its orbax-checkpoint<0.11.37 pin would downgrade orbax.
  .venv/bin/python -m pip install -q --no-deps "jax2onnx==0.17.1"
  touch "$stamp"
fi
