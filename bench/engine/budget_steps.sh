# Sourced by the engine device scripts (pdl_h200.sh, pdl2_h200.sh): steps with a time limit inside one budget.
# The caller sets BUDGET (seconds in all) and T0 (its start, $(date +%s)) before calling them.

# left: the seconds left of BUDGET
left() { echo $((BUDGET - ($(date +%s) - T0))); }

step() {  # step NAME MAX_S CMD...: runs CMD with min(MAX_S, time left) seconds, logs its time
  local name=$1 max=$2
  shift 2
  local lim
  lim=$(left)
  [ "$lim" -gt "$max" ] && lim=$max
  if [ "$lim" -lt 15 ]; then echo "== $name: skipped (budget)"; return; fi
  local t=$(date +%s)
  echo "== $name (limit $lim s)"
  timeout "$lim" "$@"
  echo "== $name: rc $? in $(( $(date +%s) - t )) s"
}
