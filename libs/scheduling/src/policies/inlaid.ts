/**
 * `inlaid` (LoRA-Inlaid): shortest predicted remaining output first, with continuous aging; tasks
 * already in the running batch first; candidates of at most `beta` distinct tasks are admitted first,
 * then (work-conserving) rows and KV that would sit idle go to the best remaining candidates, up to
 * `fillMaxTasks` distinct tasks; memory-aware admission that reserves KV for the predicted final
 * length (a low quantile of it); an SLO-aware step budget (step-budget.ts) that admits a candidate only
 * while the projected decode step stays within the TPOT SLO net of prefill time, so the batch's TPOT
 * holds and a new task's adapter is paid for only when it fits; batched prefill admission (batch-gate.ts) when
 * steps that prefill pay a fixed cost. Each ingredient can be switched off for
 * the ablation.
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

  constructor(private readonly opts: InlaidOptions) {
    this.budgetSafety = opts.stepBudget ? opts.budgetSafety : undefined;
    this.batchedAdmission = opts.batchedAdmission;
    this.starvingPausesAdmission = !opts.lenientStarvation;
  }

  onArrive(): void {}

  waitingKey(r: TrackedRequest): number[] {
    if (!this.opts.srtf) return [r.spec.arrivalS];
    // remaining - aging * (now - arrival) orders the same as remaining + aging * arrival, so the key is static.
    return [predictedRemaining(r.prediction, r.generated) + this.opts.agingTokensPerS * r.spec.arrivalS];
  }

  headKey(r: TrackedRequest, key: number[], batch: BatchView): number[] {
    if (!this.opts.grouping) return key;
    return [batch.taskRows.has(r.spec.task) ? 0 : 1, ...key];
  }

  evictionKey(r: TrackedRequest): number[] {
    return this.opts.srtf ? [predictedRemaining(r.prediction, r.generated)] : [r.spec.arrivalS];
  }

  canJoin(task: string, batch: BatchView): boolean {
    return !this.opts.grouping || batch.taskRows.has(task) || batch.taskRows.size < this.opts.beta;
  }

  /** Beta steers the choice among candidates; it never leaves rows idle when `workConserving`. */
  canFill(task: string, batch: BatchView): boolean {
    return this.opts.workConserving && (batch.taskRows.has(task) || batch.taskRows.size < this.opts.fillMaxTasks);
  }

  reservedTokens(r: TrackedRequest): number {
    const now = contextTokens(r) + 1;
    if (!this.opts.memoryAware) return now;
    return Math.max(now, contextTokens(r) + predictedRemaining(r.prediction, r.generated, this.opts.reserveQuantile));
  }

  onToken(): void {}
}
