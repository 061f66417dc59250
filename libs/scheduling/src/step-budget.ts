/**
 * SLO-aware step budget (inlaid): a request's time per output token is the mean step time over its life,
 * and every step also carries the prefills admitted in it. So a decode step may take at most
 *   safety * TPOT SLO * (1 - prefill share)
 * where the prefill share is the measured fraction of recent worker time spent on per-token prefill work
 * (decayed sums of prefill seconds over elapsed seconds; a fixed per-prefill-step cost is left out, since
 * admitting less does not reduce it). The projected step counts the batch's rows, distinct adapters and
 * the KV it will hold halfway through the candidate's predicted output (each row's KV grows while it decodes).
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
 * no request that could is arriving (`saveableArriving`: the newest arrival is within its TTFT). Hopeless
 * work then runs at full batch size (capping it would cost throughput and save nobody; the drain after a
 * burst runs at full speed). Without a budget, only the fill is bounded, by the plain TPOT with the current
 * KV. Always open without the worker's `stepCost`.
 */
export class StepGate {
  private protect = false;
  /** Budget for the batch as it was when the round began (a later, tighter SLO only lowers the real one). */
  private readonly batchBudgetS: number;

  constructor(
    private readonly slot: WorkerSlot,
    private readonly now: number,
    private readonly safety: number | undefined,
    saveableArriving = false,
  ) {
    this.protect = saveableArriving;
    let tpot = Number.POSITIVE_INFINITY;
    for (const x of slot.running.values()) {
      if (!pastTtft(x, now)) this.protect = true;
      tpot = Math.min(tpot, x.slo.tpotS);
    }
    this.batchBudgetS = stepBudgetS(tpot, safety ?? 1, slot.prefill.share());
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
    const c = this.slot.state.stepCost;
    if (this.safety === undefined || c === undefined || this.slot.running.size === 0 || !this.protect) return false;
    const cheapest = { rows: this.slot.running.size + 1, adapters: this.slot.taskRows.size, kvTokens: usedBlocks * this.slot.state.blockSize + 1 };
    return decodeStepS(c, cheapest) > this.batchBudgetS;
  }

  /** For the work-conserving fill. */
  fill(r: TrackedRequest, usedBlocks: number): boolean {
    if (this.safety !== undefined) return this.budgeted(r, usedBlocks, this.safety);
    const c = this.slot.state.stepCost;
    if (c === undefined) return true;
    const kvTokens = (usedBlocks + blocksFor(contextTokens(r) + 1, this.slot.state.blockSize)) * this.slot.state.blockSize;
    return decodeStepS(c, this.shapeWith(r, kvTokens)) <= tightestTpot(this.slot, r);
  }

  private budgeted(r: TrackedRequest, usedBlocks: number, safety: number): boolean {
    const c = this.slot.state.stepCost;
    if (c === undefined || this.slot.running.size === 0) return true;
    const saveable = !pastTtft(r, this.now);
    if (!this.protect && !saveable) return true;
    const kvTokens = usedBlocks * this.slot.state.blockSize + midLifeKvTokens(r, this.slot.state.blockSize);
    const ok = decodeStepS(c, this.shapeWith(r, kvTokens)) <= stepBudgetS(tightestTpot(this.slot, r), safety, this.slot.prefill.share());
    if (ok && saveable) this.protect = true;
    return ok;
  }

  private shapeWith(r: TrackedRequest, kvTokens: number): BatchShape {
    const adapters = this.slot.taskRows.size + (this.slot.taskRows.has(r.spec.task) ? 0 : 1);
    return { rows: this.slot.running.size + 1, adapters, kvTokens };
  }
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
