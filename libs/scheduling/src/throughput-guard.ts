/**
 * Throughput guard (inlaid's `throughputGuard` option, off by default): the SLO step budget keeps steps short, so a
 * saturated worker pays the fixed step cost (`stepCost.baseS`) more often than a policy that fills every step. The
 * guard bounds that loss. After each admission round in which the budget turned a candidate away, it adds the fixed
 * cost the step paid beyond a filled one, baseS x (1 - rows / reference rows), with reference rows = min(max batch
 * rows, running + waiting requests) (what a policy admitting everything that is waiting would run, rows and prefill
 * caps aside). While that estimated loss exceeds `epsilon` of the time since the worker's first step, the budget is
 * off (as with `stepBudget: false`), and it stays off until the loss is back under epsilon x (elapsed - holdS): the
 * protected and unprotected stretches then last seconds, so the requests that arrive in a protected stretch are saved
 * together instead of every request getting a budget that holds only part of the time.
 * Why (bench/results/sim-slo-bound-2026-11-30-*.md): a schedule that protects every saveable arrival through the arrival
 * window cannot reach 99% of fifo's throughput at some H200 points, but 2x the baselines' SLO attainment needs only a
 * fraction of the requests to be saved, so a bounded share of protected time can meet both.
 */
export const GUARD_HOLD_S = 10;

export class ThroughputGuard {
  private deficitS = 0;
  private startS: number | undefined;
  private off = false;

  /** Whether the step budget applies at `now` with loss allowance `epsilon` (share of elapsed time). */
  budgetOn(now: number, epsilon: number, holdS = GUARD_HOLD_S): boolean {
    this.startS ??= now;
    const elapsed = now - this.startS;
    if (this.off) this.off = this.deficitS > epsilon * Math.max(0, elapsed - holdS);
    else this.off = this.deficitS > epsilon * elapsed;
    return !this.off;
  }

  /** Records a round whose budget turned a candidate away: the batch has `rows` rows where `refRows` could run. */
  record(baseS: number, rows: number, refRows: number): void {
    if (refRows > rows && rows > 0) this.deficitS += baseS * (1 - rows / refRows);
  }

  /** Estimated fixed-cost seconds lost to the budget so far. */
  get lossS(): number {
    return this.deficitS;
  }
}
