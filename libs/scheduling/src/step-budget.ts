/**
 * SLO-aware step budget (inlaid): a request's time per output token is the mean step time over its life,
 * and every step also carries the prefills admitted in it. So a decode step may take at most
 *   safety * TPOT SLO * (1 - prefill share)
 * where the prefill share is the measured fraction of recent worker time spent on per-token prefill work
 * (decayed sums of prefill seconds over elapsed seconds; a fixed per-prefill-step cost counts only where inlaid's
 * `budgetFixedPrefill` says so: 'auto' = when it is at most `budgetFixedPrefillMaxTpot` x the TPOT SLO). The projected step counts the batch's rows, distinct adapters and
 * the KV it will hold halfway through the candidate's predicted output (each row's KV grows while it decodes).
 *
 * Banked slack (inlaid's `lostSlack` option): a row that has decoded faster than its TPOT SLO has time to spare,
 *   slack = TPOT SLO * (generated - 1) - (now - first token),
 * and meets its SLO as long as its remaining n steps average at most TPOT SLO + slack / n. When no request that
 * could still meet its SLO is arriving, a lost candidate (past its TTFT) may use that: its limit is the lowest,
 * over the saveable rows, of the budget plus safety * slack / n, with n a high quantile (`SLACK_QUANTILE`) of the
 * row's predicted remaining output (a longer n spreads the slack thinner), so the lost backlog can start draining
 * while the last saveable rows finish. Off by default: on three seeds it met the goal at one point fewer (120 of 135
 * against 121) and lowered the CPU model's mean SLO attainment by 0.002 (bench/results/sim-evidence-2026-11-29-v6-seeds.md).
 */
import { blocksFor } from './kv';
import { predictedRemaining } from './predictor/remaining';
import { contextTokens, TrackedRequest } from './tracked';
import { StepCost } from './types';
import type { WorkerSlot } from './worker-slot';

/**
 * One admission round's step-time gate for one worker. With a policy budget (`safety` defined) every
 * candidate must fit the SLO-aware budget, except the first row of an empty batch, and a hopeless
 * candidate (past its TTFT) while nothing could still be saved: no row of the batch can meet its SLO and
 * no request that could is arriving (`saveableArriving`: the newest arrival is younger than its TTFT SLO). Hopeless
 * work then runs at full batch size (capping it would cost throughput and save nobody; the drain after a
 * burst runs at full speed). Without a budget, only the fill is bounded, by the plain TPOT with the current
 * KV. Always open without the worker's `stepCost`.
 */
export class StepGate {
  private slot!: WorkerSlot;
  private now = 0;
  private safety: number | undefined;
  private protect = false;
  /** Budget for the batch as it was when the round began (a later, tighter SLO only lowers the real one). */
  private batchBudgetS = Number.POSITIVE_INFINITY;
  /** Lost candidates may use the saveable rows' banked slack this round (see the file comment). */
  private lostUseSlack = false;
  /** Limit for a lost candidate when the round began (rows admitted later only lower it): for `closed`. */
  private lostLimitS = Number.NEGATIVE_INFINITY;
  /**
   * Tightest TPOT SLO of the running rows, and the running-set size it was computed at. Within a round the running
   * set only grows (admissions), so a changed size is exactly when it must be recomputed; this keeps the per-candidate
   * check O(1) instead of a scan of every running row (the simulator's hot spot at 1000 tasks).
   */
  private runTpotS = Number.POSITIVE_INFINITY;
  private runTpotRows = -1;

  /**
   * Starts a round for `slot` at `now` and returns this gate. One gate serves every round of a scheduler (a round
   * is planned synchronously, one at a time), so the per-step planning allocates no gate.
   */
  begin(slot: WorkerSlot, now: number, safety: number | undefined, saveableArriving = false, useSlack = false): this {
    this.slot = slot;
    this.now = now;
    this.safety = safety;
    this.protect = saveableArriving;
    let tpot = Number.POSITIVE_INFINITY;
    for (const x of slot.running.values()) {
      if (!pastTtft(x, now)) this.protect = true;
      tpot = Math.min(tpot, x.slo.tpotS);
    }
    this.runTpotS = tpot;
    this.runTpotRows = slot.running.size;
    this.batchBudgetS = stepBudgetS(tpot, safety ?? 1, slot.prefill.share());
    this.lostUseSlack = useSlack && safety !== undefined && !saveableArriving;
    this.lostLimitS = this.lostUseSlack ? slackLimitS(slot, now, safety ?? 1) : Number.NEGATIVE_INFINITY;
    return this;
  }

  /** For candidates the policy lets join; `usedBlocks` = KV blocks of the batch so far. */
  join(r: TrackedRequest, usedBlocks: number): boolean {
    return this.safety === undefined || this.budgeted(r, usedBlocks, this.safety);
  }

  /**
   * True when no candidate can pass any more: the budget binds and even one more row of a task already in
   * the batch, with one KV token, would exceed it (lets the scheduler stop scanning a long queue early).
   */
  closed(usedBlocks: number): boolean {
    return this.shut(usedBlocks, 0);
  }

  /**
   * True when no candidate of a task that is not in the batch yet can pass `join` or `fill` any more: even one
   * more row with one KV token and one more adapter would exceed the budget. Like `closed`, once true it stays true
   * for the rest of the round (rows, adapters and KV only grow, the protection only switches on, the limits only
   * fall), so admission may skip such candidates without evaluating them.
   */
  closedToNewTasks(usedBlocks: number): boolean {
    return this.shut(usedBlocks, 1);
  }

  private shut(usedBlocks: number, newAdapters: number): boolean {
    const c = this.slot.state.stepCost;
    if (this.safety === undefined || c === undefined || this.slot.running.size === 0 || !this.protect) return false;
    const cheapest = { rows: this.slot.running.size + 1, adapters: this.slot.taskRows.size + newAdapters, kvTokens: usedBlocks * this.slot.state.blockSize + 1 };
    return decodeStepS(c, cheapest) > Math.max(this.batchBudgetS, this.lostLimitS);
  }

  /** For the work-conserving fill. */
  fill(r: TrackedRequest, usedBlocks: number): boolean {
    if (this.safety !== undefined) return this.budgeted(r, usedBlocks, this.safety);
    const c = this.slot.state.stepCost;
    if (c === undefined) return true;
    const kvTokens = (usedBlocks + blocksFor(contextTokens(r) + 1, this.slot.state.blockSize)) * this.slot.state.blockSize;
    return decodeStepS(c, this.shapeWith(r, kvTokens)) <= this.tightest(r);
  }

  private budgeted(r: TrackedRequest, usedBlocks: number, safety: number): boolean {
    const c = this.slot.state.stepCost;
    if (c === undefined || this.slot.running.size === 0) return true;
    const saveable = !pastTtft(r, this.now);
    if (!this.protect && !saveable) return true;
    const kvTokens = usedBlocks * this.slot.state.blockSize + midLifeKvTokens(r, this.slot.state.blockSize);
    const limit = this.lostUseSlack && !saveable ? slackLimitS(this.slot, this.now, safety) : stepBudgetS(this.tightest(r), safety, this.slot.prefill.share());
    const ok = decodeStepS(c, this.shapeWith(r, kvTokens)) <= limit;
    if (ok && saveable) this.protect = true;
    return ok;
  }

  /** `tightestTpot(this.slot, r)`, with the running rows' part cached for the round (see `runTpotS`). */
  private tightest(r: TrackedRequest): number {
    if (this.slot.running.size !== this.runTpotRows) {
      let t = Number.POSITIVE_INFINITY;
      for (const x of this.slot.running.values()) t = Math.min(t, x.slo.tpotS);
      this.runTpotS = t;
      this.runTpotRows = this.slot.running.size;
    }
    return Math.min(r.slo.tpotS, this.runTpotS);
  }

  private shapeWith(r: TrackedRequest, kvTokens: number): BatchShape {
    const adapters = this.slot.taskRows.size + (this.slot.taskRows.has(r.spec.task) ? 0 : 1);
    return { rows: this.slot.running.size + 1, adapters, kvTokens };
  }
}

/** Quantile of a row's predicted remaining output that its banked slack is spread over. */
export const SLACK_QUANTILE = 0.9;

/**
 * Decode-step limit that keeps every saveable row of `slot` (not past its TTFT) within its TPOT SLO, using the
 * slack it has banked (file comment); +Infinity when no row is saveable.
 */
export function slackLimitS(slot: WorkerSlot, now: number, safety: number): number {
  const share = slot.prefill.share();
  let limit = Number.POSITIVE_INFINITY;
  for (const x of slot.running.values()) {
    if (pastTtft(x, now)) continue;
    limit = Math.min(limit, stepBudgetS(x.slo.tpotS, safety, share) + safety * bankedSlackS(x, now) / predictedRemaining(x.prediction, x.generated, SLACK_QUANTILE));
  }
  return limit;
}

/** Time `r` has saved against its TPOT SLO so far (>= 0; 0 before its first token). */
export function bankedSlackS(r: TrackedRequest, now: number): number {
  if (r.firstTokenS === undefined) return 0;
  return Math.max(0, r.slo.tpotS * (r.generated - 1) - (now - r.firstTokenS));
}

/** Whether `r` has missed (or, still waiting at `now`, can no longer meet) its TTFT SLO. */
export function pastTtft(r: TrackedRequest, now: number): boolean {
  return (r.firstTokenS ?? now) - r.spec.arrivalS > r.slo.ttftS;
}

/** The tightest TPOT SLO among the batch and `r`. */
export function tightestTpot(slot: WorkerSlot, r: TrackedRequest): number {
  let t = r.slo.tpotS;
  for (const x of slot.running.values()) t = Math.min(t, x.slo.tpotS);
  return t;
}

/** Fraction of recent time a worker spent on prefill, from decayed sums (time constant `tauS`). */
export class PrefillShare {
  private prefillS = 0;
  private elapsedS = 0;
  private lastS: number | undefined;

  constructor(private readonly tauS = 10) {
    if (!(tauS > 0)) throw new Error(`PrefillShare time constant must be > 0, got ${tauS}`);
  }

  /** Records a step planned at `nowS` that prefills `prefillS` seconds of work (0 for decode-only steps). */
  record(nowS: number, prefillS: number): void {
    if (this.lastS !== undefined && nowS > this.lastS) {
      const dt = nowS - this.lastS;
      const keep = Math.exp(-dt / this.tauS);
      this.elapsedS = this.elapsedS * keep + dt;
      this.prefillS *= keep;
    }
    this.lastS = this.lastS === undefined ? nowS : Math.max(this.lastS, nowS);
    this.prefillS += prefillS;
  }

  /** Share in [0, maxShare]; 0 until time has passed. */
  share(maxShare = 0.8): number {
    return this.elapsedS > 0 ? Math.min(maxShare, this.prefillS / this.elapsedS) : 0;
  }
}

export interface BatchShape {
  readonly rows: number;
  readonly adapters: number;
  readonly kvTokens: number;
}

export function decodeStepS(c: StepCost, s: BatchShape): number {
  return c.baseS + s.rows * c.decodeRowS + s.adapters * c.adapterS + s.kvTokens * c.kvTokenS;
}

/** KV tokens `r` will hold on average over its predicted remaining output (context + half the rest). */
export function midLifeKvTokens(r: TrackedRequest, blockSize: number): number {
  const ctx = blocksFor(contextTokens(r) + 1, blockSize) * blockSize;
  return ctx + predictedRemaining(r.prediction, r.generated) / 2;
}

/** Decode-step time the budget allows, for the tightest TPOT SLO in the batch and the candidate. */
export function stepBudgetS(tpotS: number, safety: number, prefillShare: number): number {
  return safety * tpotS * (1 - prefillShare);
}
