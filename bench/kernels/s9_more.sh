#!/usr/bin/env bash
# Session 9, device call 2: (1) the 7B int4 decode step at batch 1-16 with three tables alternating round by round
# on one runner (s9_decode.py): final (the tree's table after call 1), old (HEAD's), m1pdl (final + the fastest-pdl
# M = 1 picks for o and down); (2) the 13B int4 decode shapes retuned as in call 1 (S9_SHAPES=13b: checks, timing,
# report, tuned_table.py --merge), then the 13B decode step at batch 1-16 with the tree's table and the 13B-merged
# one alternating, and the table s9_gemv.py final would ship from it (into the archive only: the tree is not changed).
# Everything comes back in $OUT/s9-more.tgz.
# Usage (device): OUT=... bash bench/kernels/s9_more.sh [DECODE_S] [ROUNDS] [BENCH_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s9-out /tmp/s9-more
DECODE_S=${1:-100}
ROUNDS=${2:-8}
BENCH_S=${3:-150}
source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
{
  device_header
  t0=$(date +%s)
  cp "$TABLE" "$WORK/tree-table.json"
  python3 bench/kernels/s9_gemv.py tables --out "$WORK" --patches bench/results/kernels-2026-11-30-s9-tables.json \
    --old-table "$TABLE"
  decode s9-confirm 7b "final=$WORK/final-table.json,old=$WORK/old-table.json,m1pdl=$WORK/m1pdl-table.json" final,old,m1pdl
  export S9_SHAPES=13b
  check_shards s9_gemv 150 16
  wait
  echo "13B checks: $(cat "$WORK"/check-*.jsonl | wc -l) candidates in $(( $(date +%s) - t0 )) s"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  timing_phase s9_gemv "$BENCH_S"
  python3 bench/kernels/s9_gemv.py report --out "$WORK" --dest "$OUT" --stem kernels-2026-11-30-s9-13b \
    --command "OUT=\$OUT bash bench/kernels/s9_more.sh (13B part)" | grep -E '^\| 13B'
  unset S9_SHAPES
  python3 bench/kernels/tuned_table.py "$OUT/kernels-2026-11-30-s9-13b.json" --merge && cp "$TABLE" "$WORK/new13-table.json"
  cp "$WORK/tree-table.json" "$TABLE"
  decode s9-13b 13b "old=$WORK/tree-table.json,new=$WORK/new13-table.json" old,new
  python3 bench/kernels/s9_gemv.py final --out "$WORK" --decode "$OUT/decode-2026-11-30-s9-13b.json" \
    --old-table "$WORK/tree-table.json" --new-table "$WORK/new13-table.json" --dest-table "$WORK/final13-table.json"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$WORK/log.txt"
archive_work s9-more
