/**
 * `fifo` (S-LoRA) and `fcfs-maxloras` (vLLM): strict arrival order, any number of adapters per batch
 * for fifo; fcfs-maxloras skips (without losing their place) requests whose adapter would exceed
 * max_loras distinct adapters in the batch. Memory victims: the latest arrival (vLLM's rule).
 */
import { PolicyName } from '../config';
import { contextTokens, TrackedRequest } from '../tracked';
import { BatchView, Policy } from './policy';

export class FifoPolicy implements Policy {
  readonly headOfLineBlocking = true;
  readonly budgetSafety = undefined;
  readonly triage = false;
  readonly starvingPausesAdmission = true;

  constructor(
    readonly name: PolicyName = 'fifo',
    private readonly maxLoras: number = Number.POSITIVE_INFINITY,
  ) {}

  onArrive(): void {}
  promotesStarving(): boolean {
    return true;
  }
  waitingKey(r: TrackedRequest): number[] {
    return [r.spec.arrivalS];
  }
  headKey(_r: TrackedRequest, key: number[]): number[] {
    return key;
  }
  evictionKey(r: TrackedRequest): number[] {
    return [r.spec.arrivalS];
  }
  canJoin(task: string, batch: BatchView): boolean {
    return batch.taskRows.has(task) || batch.taskRows.size < this.maxLoras;
  }
  /** Joins stop at max_loras distinct tasks; nothing fills. */
  refusesNewTasks(phase: 'join' | 'fill', batch: BatchView): boolean {
    return phase === 'fill' || batch.taskRows.size >= this.maxLoras;
  }
  /** max_loras is a hard limit (vLLM), so nothing fills past it. */
  canFill(): boolean {
    return false;
  }
  reservedTokens(r: TrackedRequest): number {
    return contextTokens(r) + 1;
  }
  onToken(): void {}
}
