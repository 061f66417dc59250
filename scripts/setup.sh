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
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  # The dashboard browser test drives Debian's chromium (Playwright cannot download a browser here).
  echo "[setup] apt-get install chromium"
  (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
    || echo "[setup] could not install chromium; the dashboard browser test will fail" >&2
fi
echo "[setup] python venv"
bash scripts/setup-python.sh
echo "[setup] generate gRPC code"
bash scripts/gen-proto.sh
echo "[setup] build TypeScript"
npx tsc -b tsconfig.build.json
