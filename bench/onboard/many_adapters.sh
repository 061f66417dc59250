#!/usr/bin/env bash
# Registers N adapters through the real gateway (POST /v1/load_lora_adapter) on a real worker (tiny model) and
# records: load latency, GET /v1/tasks and /healthz latency while registering, the worker's RSS, and its device
# adapter residency after requests to 80 distinct adapters (64 device slots). It runs the "many adapters" test
# of apps/e2e/src/onboarding-grpc.e2e-spec.ts (CI runs it with N=200) with N set here.
#   bench/onboard/many_adapters.sh [N=1000] [OUT=bench/results/onboard-many-adapters-<date>.json]
# Needs Postgres and Redis (as the e2e tests). Runs at nice 10 (shared dev VM).
set -euo pipefail
N=${1:-1000}
REPO=$(cd "$(dirname "$0")/../.." && pwd); cd "$REPO"
OUT=${2:-bench/results/onboard-many-adapters-$(date -u +%F).json}
INLAID_E2E_MANY_ADAPTERS=$N INLAID_E2E_MANY_OUT="$REPO/$OUT.tmp" \
  nice -n 10 npx jest apps/e2e/src/onboarding-grpc.e2e-spec.ts -t 'many adapters' --silent
node -e '
const fs = require("fs"); const [tmp, out, cmd] = process.argv.slice(1);
const r = JSON.parse(fs.readFileSync(tmp, "utf8"));
const os = require("os");
const meta = { command: cmd, date: new Date().toISOString(), device: `CPU only: ${os.cpus().length} x ${os.cpus()[0].model}, shared dev VM (load avg ${os.loadavg()[0].toFixed(1)})` };
fs.writeFileSync(out, JSON.stringify({ ...meta, ...r }, null, 2) + "\n"); fs.unlinkSync(tmp);
' "$REPO/$OUT.tmp" "$REPO/$OUT" "bench/onboard/many_adapters.sh $N"
cat "$OUT"
