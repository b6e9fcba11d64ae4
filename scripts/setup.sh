#!/usr/bin/env bash
# Create ./.venv with Python 3.11 and install the locked environment plus this project.
# Safe to re-run: what is already installed is kept. Used by the README's two commands and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "setup: $PY is $("$PY" --version 2>&1); Python 3.11 is required (set PYTHON=...)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
echo "setup: installing into $(pwd)/.venv (first time: a few minutes)"
# torch first: the CPU build is pinned, and DeepSpeed's build needs torch present.
"${PIP[@]}" install -q "torch==2.13.0"
# The lock is the complete resolved set (pip freeze), so it installs without re-resolving.
"${PIP[@]}" install -q --no-deps -r requirements.lock
"${PIP[@]}" install -q --no-deps -e .
.venv/bin/python -c 'import hammer_core.data.compiled._fastprep, hammer_core.data.compiled._fastbpe' 2>/dev/null \
  && echo "setup: compiled prepare path built (hammer_core.data.compiled._fastprep, hammer_core.data.compiled._fastbpe)" \
  || echo "setup: no C compiler? the prepare stage will use its pure-Python path (same bytes, slower)"
echo "setup: done ($(.venv/bin/python -c 'import torch, prefect, mlflow, deepspeed; print(f"torch {torch.__version__}, prefect {prefect.__version__}, mlflow {mlflow.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null | tail -1))"
