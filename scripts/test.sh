#!/usr/bin/env bash
# Runs every TypeScript (jest: unit + e2e) and Python (pytest) test. Exit code is non-zero if any fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
# the SmolLM2 conversion into its cache (~17 CPU-s on a fresh machine, else inside one pytest worker's first test) runs
# beside the mostly single-threaded lint and type-check; a failure here shows again, with its message, in the tests
.venv/bin/python -c "from inlaid_worker.model.smollm2 import ensure_smollm2; ensure_smollm2()" >/dev/null 2>&1 &
warm=$!
echo "[test] lint (ruff, eslint) and type-check every spec (ts-jest compiles them with isolatedModules: no type check)"
.venv/bin/ruff check . || status=1
npx eslint . || status=1
npx tsc -p tsconfig.specs.json || status=1  # libs/*/src and apps/*/src, specs included (noEmit)
wait "$warm" || echo "[test] SmolLM2 conversion failed here; the tests that need it convert (and report) it again"
echo "[test] python"
# two processes, one test file each at a time (pytest-xdist): the suite is mostly single-threaded interpreter work
.venv/bin/python -m pytest -q -n 2 --dist loadfile workers/tests "$@" || status=1
echo "[test] typescript"
# two jest workers (jest.config.js); the suites whose assertions time a worker's death or stop or a latency bound run after
# them, one at a time, so the other worker's e2e stack cannot slow them (multi-worker failed once in four runs when
# pytest ran beside an in-band jest)
INBAND='apps/e2e/src/(multi-worker|faults-worker|worker-down|worker-draining|serving|onboarding-grpc)\.e2e-spec\.ts$'
npx jest --ci --testPathIgnorePatterns "$INBAND" || status=1
npx jest --ci --runInBand "$INBAND" || status=1
exit $status
