#!/usr/bin/env bash
# Starts the Python worker (default: SmolLM2-135M-Instruct with the shipped task adapters) and the gateway.
# Ctrl-C stops both. Both share this environment: the worker reads INLAID_WORKER_<FLAG> (its --tls-cert is
# INLAID_WORKER_TLS_CERT), the gateway INLAID_GATEWAY_TLS_CA/_CERT/_KEY for mTLS to the worker; no name is read by both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${INLAID_MODEL:-smollm2}
ADAPTERS=${INLAID_ADAPTERS_DIR:-assets/adapters}
WORKER_PORT=${INLAID_WORKER_PORT:-50061}
export WORKER_ADDRS=${WORKER_ADDRS:-127.0.0.1:$WORKER_PORT}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
if [ -z "${INLAID_NO_WORKER:-}" ]; then
  .venv/bin/python -m inlaid_worker.server --model "$MODEL" --adapters-dir "$ADAPTERS" \
    --host 127.0.0.1 --port "$WORKER_PORT" ${INLAID_WORKER_ARGS:-} &
  pids+=($!)
fi
node apps/gateway/dist/main.js &
pids+=($!)
wait -n "${pids[@]}"
