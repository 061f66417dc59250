#!/usr/bin/env bash
# Runs every TypeScript (jest: unit + e2e) and Python (pytest) test. Exit code is non-zero if any fails.
# pytest and jest run side by side (each mostly keeps one core busy; jest runs its suites one at a time on a
# 2-core machine), pytest's output is printed after jest's.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
echo "[test] lint (ruff, eslint)"
.venv/bin/ruff check . || status=1
npx eslint . || status=1
py_log="$(mktemp)"
trap 'rm -f "$py_log"' EXIT
echo "[test] python (in the background; output below jest's)"
.venv/bin/python -m pytest -q workers/tests "$@" > "$py_log" 2>&1 &
py_pid=$!
echo "[test] typescript"
npx jest --ci || status=1
wait "$py_pid" || status=1
echo "[test] python output"
cat "$py_log"
exit $status
