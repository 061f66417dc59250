#!/usr/bin/env bash
# Fuzzes a running gateway's HTTP API against apps/gateway/openapi.yaml with schemathesis (installed in a
# throwaway venv, never in workers/requirements.txt). Checks: no 5xx, responses match the schema.
#   bench/fuzz/fuzz-http.sh http://127.0.0.1:8080 [max-examples] [seed]
set -euo pipefail
cd "$(dirname "$0")/../.."
URL="${1:-http://127.0.0.1:8080}"
EXAMPLES="${2:-50}"
SEED="${3:-1}"
VENV="${SCHEMATHESIS_VENV:-/tmp/inlaid-schemathesis}"
[ -x "$VENV/bin/st" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q schemathesis; }
exec "$VENV/bin/st" run apps/gateway/openapi.yaml --url "$URL" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --seed "$SEED" --generation-deterministic --workers 1 \
  ${INLAID_KEY:+-H "Authorization: Bearer $INLAID_KEY"}
