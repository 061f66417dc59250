#!/usr/bin/env bash
# [Record: needs bench/kernels/s16_big_xch.patch applied (X_CHUNK was not kept on main).]
# Session 16b (issue 4: quant_tcs's x staging depth at block_m 32 / 64), one device call:
#  (1) test_quant_tcs_big.py's GPU tests beside s16_big.py's checks (every wide-staging tcs candidate of buckets 32 / 64
#      at the 7B and 13B shapes, PDL off and on, workspace clean; session 16's staging compiled for the timing)
#  (2) if the tests passed: timing (7B shapes, M = 32 / 64: before = HEAD's pick, every candidate x16 and wide), the
#      7B up diagnosis, report, -ship.json, -xchunk.json
#  (3) the 7B decode step at batches 32 / 64: old = the tree's table with session 16's staging, new = it merged with the
#      ship rows and X_CHUNK of -xchunk.json, alternating on one runner (s16_big_decode.py)
#  Everything under $OUT as one tarball (the device returns at most 8 files).
# Usage (device): OUT=... bash bench/kernels/s16_big.sh [CHECK_S] [BENCH_S] [DECODE_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s16b-out /tmp/s16-big
CHECK_S=${1:-90} BENCH_S=${2:-110} DECODE_S=${3:-70}
STEM=${S16_STEM:-kernels-2026-12-01-s16-big}
CMD="OUT=\$OUT bash bench/kernels/s16_big.sh $*"
export S16_SHAPES=${S16_SHAPES:-7B qkv 4096x12288,7B o 4096x4096,7B gate/up 4096x22016,7B down 11008x4096,7B up 4096x11008,13B qkv 5120x15360,13B o 5120x5120,13B gate/up 5120x27648,13B down 13824x5120}
cp "$TABLE" /tmp/s16b-old-table.json
{
  device_header
  t0=$(date +%s)
  timeout "$CHECK_S" python3 -m pytest workers/tests/kernels/test_quant_tcs_big.py -q -p no:cacheprovider >"$WORK/tests.log" 2>&1 &
  check_shards s16_big "$CHECK_S" 12
  wait
  echo "phase 1 $(( $(date +%s) - t0 )) s"; tail -n 3 "$WORK/tests.log"
  echo "checked: $(cat "$WORK"/check-*.jsonl | wc -l); errors / over tolerance:"
  python3 - "$WORK" <<'PY'
import json, sys, pathlib
rows = [json.loads(l) for p in pathlib.Path(sys.argv[1]).glob("check-*.jsonl") for l in p.read_text().splitlines()]
bad = [r for r in rows if "error" in r or max(r["err"], r["err_pdl"]) > 1e-2 or not (r["clean"] and r["clean_pdl"])]
print(len(rows), "rows", len(bad), "bad; worst", max((max(r["err"], r["err_pdl"]) for r in rows if "err" in r), default=None))
for r in bad[:5]: print(r)
PY
  if ! grep -qE "[0-9]+ passed" "$WORK/tests.log" || grep -qE "[0-9]+ (failed|errors?)\b" "$WORK/tests.log"; then
    echo "== GPU tests did not pass: no timing"; grep -E "FAILED|Error" "$WORK/tests.log" | head -20
  else
    t1=$(date +%s)
    timeout "$BENCH_S" python3 bench/kernels/s16_big.py bench --out "$WORK"
    echo "phase 2 $(( $(date +%s) - t1 )) s"
    python3 bench/kernels/s16_big.py report --out "$WORK" --dest "$OUT" --stem "$STEM" --command "$CMD" >/dev/null
    cat "$OUT/$STEM.md"
    ship="$OUT/$STEM-ship.json"
    if python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
      python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    fi
    t1=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 timeout "$DECODE_S" python3 bench/kernels/s16_big_decode.py --out "$OUT" \
      --tag "decode-2026-12-01-s16-big" --shape 7b --batches "${S16_BATCHES:-32,64}" --rounds "${S16_ROUNDS:-8}" \
      --tables "old=/tmp/s16b-old-table.json@x16,new=$TABLE@$OUT/$STEM-xchunk.json"
    echo "decode rc $? in $(( $(date +%s) - t1 )) s"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
cp "$WORK/tests.log" "$OUT/$STEM-tests.log"
cp "$WORK"/check-*.jsonl "$WORK"/bench.json "$OUT"/ 2>/dev/null
tar czf "/tmp/$STEM.tgz" -C "$OUT" . && find "$OUT" -type f -delete && mv "/tmp/$STEM.tgz" "$OUT/"
