/**
 * `inlaid` (LoRA-Inlaid): shortest predicted remaining output first, with continuous aging; tasks
 * already in the running batch first; candidates of at most `beta` distinct tasks are admitted first,
 * then (work-conserving) rows and KV that would sit idle go to the best remaining candidates, up to
 * `fillMaxTasks` distinct tasks; memory-aware admission that reserves KV for the predicted final
 * length (a low quantile of it); an SLO-aware step budget (step-budget.ts) that admits a candidate only
 * while the projected decode step stays within the TPOT SLO net of prefill time, so the batch's TPOT
 * holds and a new task's adapter is paid for only when it fits; batched prefill admission (batch-gate.ts) when
 * steps that prefill pay a fixed cost; SLO triage (triage.ts): requests that can no longer meet their SLO go behind
 * all that still can, reserve no KV for their output (unless `lostReserveQuantile`), are preempted first and are not promoted as starving.
 * Each ingredient can be switched off for the ablation.
 */
import { BatchedAdmissionOptions } from '../batch-gate';
import { InlaidOptions } from '../config';
import { predictedRemaining } from '../predictor/remaining';
import { contextTokens, TrackedRequest } from '../tracked';
import { BatchView, Policy } from './policy';

export class InlaidPolicy implements Policy {
  readonly name = 'inlaid' as const;
  readonly headOfLineBlocking = false;

  readonly budgetSafety: number | undefined;
  readonly starvingPausesAdmission: boolean;
  readonly batchedAdmission: BatchedAdmissionOptions;
  readonly triage: boolean;
  readonly lostWorkUsesSlack: boolean;

  constructor(private readonly opts: InlaidOptions) {
    this.triage = opts.triage;
    this.budgetSafety = opts.stepBudget ? opts.budgetSafety : undefined;
    this.lostWorkUsesSlack = opts.lostSlack;
    this.batchedAdmission = opts.batchedAdmission;
    this.starvingPausesAdmission = !opts.lenientStarvation;
  }

  onArrive(): void {}

  /** `budgetFixedPrefill`: true / false, or 'auto' = when one prefill step costs at most `budgetFixedPrefillMaxTpot` x TPOT SLO. */
  countsFixedPrefill(prefillStepS: number, tpotS: number): boolean {
    const b = this.opts.budgetFixedPrefill;
    return b === 'auto' ? prefillStepS <= this.opts.budgetFixedPrefillMaxTpot * tpotS : b;
  }

  promotesStarving(r: TrackedRequest): boolean {
    return !(this.triage && lost(r));
  }

  /** With triage, requests that can still meet their SLO come first: [hopeless, order]. */
  waitingKey(r: TrackedRequest): number[] {
    const order = this.order(r);
    return this.triage ? [r.hopeless ? 1 : 0, order] : [order];
  }

  private order(r: TrackedRequest): number {
    if (!this.opts.srtf) return r.spec.arrivalS;
    // remaining - aging * (now - arrival) orders the same as remaining + aging * arrival, so the key is static.
    return predictedRemaining(r.prediction, r.generated) + this.opts.agingTokensPerS * r.spec.arrivalS;
  }

  /** Tasks in the batch first; with triage, within the saveable and then the hopeless requests. */
  headKey(r: TrackedRequest, key: number[], batch: BatchView): number[] {
    if (!this.opts.grouping) return key;
    const group = batch.taskRows.has(r.spec.task) ? 0 : 1;
    return this.triage ? [key[0], group, ...key.slice(1)] : [group, ...key];
  }

  /** Longest predicted remaining first (latest arrival without SRTF); with triage, requests already lost first. */
  evictionKey(r: TrackedRequest): number[] {
    const key = this.opts.srtf ? [predictedRemaining(r.prediction, r.generated)] : [r.spec.arrivalS];
    return this.triage ? [lost(r) ? 1 : 0, ...key] : key;
  }

  canJoin(task: string, batch: BatchView): boolean {
    return !this.opts.grouping || batch.taskRows.has(task) || batch.taskRows.size < this.opts.beta;
  }

  /** Once the batch holds beta tasks (join) or fillMaxTasks (fill; or no fill at all), no other task gets in this round. */
  refusesNewTasks(phase: 'join' | 'fill', batch: BatchView): boolean {
    if (phase === 'join') return this.opts.grouping && batch.taskRows.size >= this.opts.beta;
    return !this.opts.workConserving || batch.taskRows.size >= this.opts.fillMaxTasks;
  }

  /** Beta steers the choice among candidates; it never leaves rows idle when `workConserving`. */
  canFill(task: string, batch: BatchView): boolean {
    return this.opts.workConserving && (batch.taskRows.has(task) || batch.taskRows.size < this.opts.fillMaxTasks);
  }

  /**
   * Memory-aware: the context plus a low quantile of the predicted remaining output. With triage, a request
   * that has already lost its SLO reserves only its context: reserving KV protects the SLO of the rows, and
   * for lost work the reservation would only idle KV (preemption picks lost rows first when KV runs short).
   */
  reservedTokens(r: TrackedRequest): number {
    const now = contextTokens(r) + 1;
    if (!this.opts.memoryAware) return now;
    const lostRow = this.triage && lost(r);
    const q = lostRow ? this.opts.lostReserveQuantile : this.opts.reserveQuantile;
    if (q === null) return now;
    return Math.max(now, contextTokens(r) + predictedRemaining(r.prediction, r.generated, q));
  }

  onToken(): void {}
}

/** Whether `r` can no longer meet its SLO because its first token is (or would be) late: marked hopeless while waiting, or started late. */
export function lost(r: TrackedRequest): boolean {
  return r.hopeless || (r.firstTokenS !== undefined && r.firstTokenS - r.spec.arrivalS > r.slo.ttftS);
}
