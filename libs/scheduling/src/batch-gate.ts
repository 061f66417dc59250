/**
 * Batched prefill admission (inlaid): when every step that prefills pays a fixed cost (the worker's
 * `stepCost.prefillStepS` > 0, e.g. eager prefill next to decode steps replayed from CUDA graphs), admitting each
 * arrival in its own step makes most steps pay it and sets the time per token. The gate holds waiting requests
 * while the worker is decoding and releases them together when any of these holds:
 *   - nothing is decoding (holding would only idle the worker);
 *   - the oldest saveable arrival (still within its TTFT SLO) has waited `holdFraction` of its TTFT SLO;
 *   - `groupRequests` saveable arrivals are waiting (enough to share one prefill step);
 *     with `needRoom` (default) these two rules release only when the worker has the free rows and KV to take the
 *     waiting saveable arrivals (up to groupRequests): in an overload the batch is full, and releasing for the
 *     one row that just freed paid the fixed cost on almost every step (measured: bench/results/sim-evidence-*-v4.md);
 *     with `budgetRoom` (default since session 9b) that room also counts the SLO step budget, which is what binds
 *     when KV is plentiful (bench/results/sim-evidence-2026-11-30-s9b-seeds.md);
 *   - the worker's last prefill step began at least prefillStepS / `fixedShare` ago, so the fixed cost takes at
 *     most about `fixedShare` of the worker's time, and (`spacingSteps`, default 8) at least that many decode steps
 *     of the running batch ago (this rule needs prefillStepS > 0; with 'on' and no fixed cost only the three rules
 *     above release).
 * Preempted requests (already past their first token) wait for a release like any other request.
 */
import { blocksFor } from './kv';
import { BatchShape, decodeStepS, pastTtft, stepBudgetS } from './step-budget';
import { contextTokens, TrackedRequest } from './tracked';
import type { WorkerSlot } from './worker-slot';

/** 'auto' = on for workers whose step cost has a fixed prefill-step cost > 0. */
export type BatchedAdmissionMode = 'auto' | 'on' | 'off';

export interface BatchedAdmissionOptions {
  readonly mode: BatchedAdmissionMode;
  /** Fraction of its TTFT SLO the oldest saveable arrival may wait before a release (0..1]. */
  readonly holdFraction: number;
  /** Saveable arrivals waiting that release at once (>= 1). */
  readonly groupRequests: number;
  /**
   * Most share of the worker's time the fixed prefill-step cost may take (0..1]. Default 0.2 since v6 (0.25 before):
   * each prefill step also stretches the TPOT of every decoding row, and on three seeds 0.2 met the goal at more
   * full-KV points with no throughput loss (bench/results/sim-evidence-2026-11-29-v6-seeds.md).
   */
  readonly fixedShare: number;
  /** Hold and group rules release only when free rows and KV can take the waiting saveable arrivals (up to groupRequests). */
  readonly needRoom: boolean;
  /**
   * Spacing tied to the decode step (optional; null or absent = off): the spacing rule also waits this many decode
   * steps of the running batch (cost model: rows, distinct adapters, KV), i.e. the spacing is
   * max(prefillStepS / fixedShare, spacingSteps x decode step). Where the fixed prefill cost is small against a decode
   * step (the served CPU fit: 7.4 ms against ~90 ms) it admits every few steps instead of every step; where it is
   * large (the measured H200 model: 37 ms against 10-30 ms) the fixedShare rule still decides. Default 8 since
   * 2026-11-30 (session 8; bench/results/sim-evidence-2026-11-30-s8-*.md): on the served CPU fit it meets the goal
   * where the plain rule lost 1-2% of the throughput, and on the measured H200 model it raised SLO attainment.
   */
  readonly spacingSteps?: number | null;
  /**
   * With `needRoom`, the room the hold and group rules need also counts the SLO step budget (inlaid's budgetSafety x
   * the tightest TPOT SLO x (1 - prefill share)): the running batch plus the waiting saveable arrivals (up to
   * groupRequests) must fit it as one decode step. Default true since session 9b (bench/results/sim-evidence-2026-11-30-s9b-*.md):
   * where the budget, not rows or KV, binds (the H200 served fit, full KV), the hold rule released on almost every
   * step and admitted the 2-3 rows that finishing rows had freed, paying the fixed prefill-step cost each time; with
   * the budget counted only the spacing rule releases then. Needs a budget (no effect without budgetSafety). Absent =
   * off (the library default sets it).
   */
  readonly budgetRoom?: boolean;
}

export class BatchGate {
  /** Arrivals in arrival order that may still be waiting and saveable (pruned lazily). */
  private arrivals: TrackedRequest[] = [];

  /** `budgetSafety`: the policy's step-budget safety (undefined = no step budget), for `budgetRoom`. */
  constructor(
    private readonly opts: BatchedAdmissionOptions | undefined,
    private readonly budgetSafety?: number,
  ) {}

  onArrive(r: TrackedRequest): void {
    if (this.opts !== undefined && this.opts.mode !== 'off') this.arrivals.push(r);
  }

  /** Whether `slot` holds admissions at all (the mode, and for 'auto' the worker's fixed prefill-step cost). */
  active(slot: WorkerSlot): boolean {
    const o = this.opts;
    if (o === undefined || o.mode === 'off') return false;
    return o.mode === 'on' || (slot.state.stepCost?.prefillStepS ?? 0) > 0;
  }

  /** True when `slot` may admit waiting requests at `now` (always when the gate is not active). */
  release(slot: WorkerSlot, now: number): boolean {
    const o = this.opts;
    if (o === undefined || !this.active(slot) || slot.running.size === 0) return true;
    this.arrivals = this.arrivals.filter((r) => r.phase === 'waiting' && !pastTtft(r, now));
    const oldest = this.arrivals[0];
    const n = Math.min(this.arrivals.length, o.groupRequests);
    const budget = o.budgetRoom === true ? this.budgetSafety : undefined;
    const roomy = !o.needRoom || (roomFor(slot, this.arrivals, n) && (budget === undefined || budgetRoomFor(slot, this.arrivals, n, budget)));
    if (roomy && oldest !== undefined && now - oldest.spec.arrivalS >= o.holdFraction * oldest.slo.ttftS) return true;
    if (roomy && this.arrivals.length >= o.groupRequests) return true;
    const fixed = slot.state.stepCost?.prefillStepS ?? 0;
    if (fixed <= 0) return false;
    if (slot.lastPrefillS === undefined) return true;
    const k = o.spacingSteps ?? null;
    const spacing = k === null ? fixed / o.fixedShare : Math.max(fixed / o.fixedShare, k * runningDecodeStepS(slot));
    return now - slot.lastPrefillS >= spacing;
  }
}

/**
 * Whether `slot` has the rows and KV blocks to take in the first `n` waiting saveable arrivals. The hold and
 * group rules pay off only then: with the batch full of rows or of KV they would pay a fixed prefill step nearly
 * every step for the one or two requests that fit, so only the spacing rule releases.
 */
function roomFor(slot: WorkerSlot, arrivals: readonly TrackedRequest[], n: number): boolean {
  if (slot.state.maxBatchRows - slot.running.size < n) return false;
  let used = 0;
  for (const r of slot.running.values()) used += blocksFor(contextTokens(r) + 1, slot.state.blockSize);
  let need = 0;
  for (let i = 0; i < n; i++) need += blocksFor(contextTokens(arrivals[i]) + 1, slot.state.blockSize);
  return used + need <= slot.state.kvBlocksTotal;
}

/**
 * Whether the first `n` waiting saveable arrivals fit `slot`'s SLO step budget (`safety` x the tightest TPOT SLO of
 * the rows and the arrivals x (1 - the prefill share)) as one decode step with the running batch (rows, distinct
 * adapters, KV at their current context). True without a step cost.
 */
export function budgetRoomFor(slot: WorkerSlot, arrivals: readonly TrackedRequest[], n: number, safety: number): boolean {
  const c = slot.state.stepCost;
  if (c === undefined) return true;
  const running = runningShape(slot);
  let kv = running.kvTokens;
  let tpot = Number.POSITIVE_INFINITY;
  for (const r of slot.running.values()) tpot = Math.min(tpot, r.slo.tpotS);
  const fresh = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = arrivals[i];
    kv += contextTokens(r) + 1;
    tpot = Math.min(tpot, r.slo.tpotS);
    if (!slot.taskRows.has(r.spec.task)) fresh.add(r.spec.task);
  }
  const step = decodeStepS(c, { rows: running.rows + n, adapters: running.adapters + fresh.size, kvTokens: kv });
  return step <= stepBudgetS(tpot, safety, slot.prefill.share());
}

/** Decode-step time of `slot`'s running batch under its step cost (0 without one). */
export function runningDecodeStepS(slot: WorkerSlot): number {
  const c = slot.state.stepCost;
  return c === undefined ? 0 : decodeStepS(c, runningShape(slot));
}

/** The running batch as one decode step sees it: its rows, distinct adapters and KV at their current context. */
function runningShape(slot: WorkerSlot): BatchShape {
  let kv = 0;
  for (const r of slot.running.values()) kv += contextTokens(r);
  return { rows: slot.running.size, adapters: slot.taskRows.size, kvTokens: kv };
}

export function validateBatchedAdmission(o: BatchedAdmissionOptions): void {
  if (!['auto', 'on', 'off'].includes(o.mode)) throw new Error(`inlaid.batchedAdmission.mode must be auto, on or off, got "${o.mode}"`);
  if (!(o.holdFraction > 0 && o.holdFraction <= 1)) throw new Error('inlaid.batchedAdmission.holdFraction must be in (0, 1]');
  if (!(Number.isInteger(o.groupRequests) && o.groupRequests >= 1)) throw new Error('inlaid.batchedAdmission.groupRequests must be a positive integer');
  if (!(o.fixedShare > 0 && o.fixedShare <= 1)) throw new Error('inlaid.batchedAdmission.fixedShare must be in (0, 1]');
  const k = o.spacingSteps ?? null;
  if (k !== null && !(k > 0 && k <= 100)) throw new Error('inlaid.batchedAdmission.spacingSteps must be null or in (0, 100]');
  if (o.budgetRoom !== undefined && typeof o.budgetRoom !== 'boolean') throw new Error('inlaid.batchedAdmission.budgetRoom must be true or false');
}
