#!/usr/bin/env bash
# Frozen copy of the built tree for the real-vs-sim benches, so that rebuilds in the checkout (other sessions'
# `tsc -b`, edits of worker sources) cannot change what a long protocol runs.
#   bench/sim/real_vs_sim_snapshot.sh SNAPDIR
# Copies apps/, libs/ (with their dist/), workers/, bench/ and the root manifests; node_modules is a directory
# of links to the checkout's packages, except @inlaid/*, whose links point into the copy; .venv links to the
# checkout's. Run from the copy: cd SNAPDIR && PYTHONPATH=$PWD/workers bash bench/sim/real_vs_sim_fit.sh ...
# SNAPDIR/SOURCE.txt records the commit and the modified files of the checkout at copy time.
set -euo pipefail
SNAP=$1
REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ -e "$SNAP" ] && { echo "$SNAP exists" >&2; exit 1; }
mkdir -p "$SNAP/node_modules"
cp -a "$REPO/apps" "$REPO/libs" "$REPO/workers" "$REPO/bench" "$REPO/package.json" "$SNAP/"
for e in "$REPO"/node_modules/* "$REPO"/node_modules/.bin; do
  n=$(basename "$e")
  [ "$n" = "@inlaid" ] || ln -s "$e" "$SNAP/node_modules/$n"
done
cp -a "$REPO/node_modules/@inlaid" "$SNAP/node_modules/@inlaid" # relative links: they resolve inside the copy
ln -s "$REPO/.venv" "$SNAP/.venv"
{ echo "copied $(date -u +%FT%TZ) from $REPO"; git -C "$REPO" rev-parse HEAD; git -C "$REPO" status --short; } > "$SNAP/SOURCE.txt"
echo "$SNAP"
