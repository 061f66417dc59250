#!/usr/bin/env bash
# Seeds a separate Postgres database with synthetic request records (10M by default) and times the
# dashboard's queries; writes bench/results/dashboard-<date>.md (or --out NAME). Usage:
#   bash bench/dashboard/seed_and_measure.sh [--records N] [--tasks N] [--runs N] [--reuse] [--keep] [--out NAME]
# --reuse keeps a database that already holds N records (migrating it); otherwise it is dropped and seeded.
# --keep leaves the database in place afterwards. Seeding is CPU-heavy: run it under `nice`.
# Env: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/inlaid_bench_dashboard).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec node -r ./bench/dashboard/ts-hook.js bench/dashboard/seed_and_measure.ts "$@"
