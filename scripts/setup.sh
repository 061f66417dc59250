#!/usr/bin/env bash
# Installs whatever is missing (npm packages, the Python venv), generates gRPC code and builds TypeScript.
# Idempotent and quiet when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK_HASH=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f node_modules/.inlaid-stamp ] || [ "$(cat node_modules/.inlaid-stamp)" != "$LOCK_HASH" ]; then
  echo "[setup] npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$LOCK_HASH" > node_modules/.inlaid-stamp
fi
echo "[setup] python venv"
bash scripts/setup-python.sh
echo "[setup] generate gRPC code"
bash scripts/gen-proto.sh
echo "[setup] build TypeScript"
npx tsc -b tsconfig.build.json
