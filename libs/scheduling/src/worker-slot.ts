/** One worker's running set with per-task row counts (the batch view the policies see). */
import { BatchView } from './policies/policy';
import { PrefillShare } from './step-budget';
import { TrackedRequest } from './tracked';
import { WorkerState } from './types';

export class WorkerSlot implements BatchView {
  readonly running = new Map<string, TrackedRequest>();
  readonly taskRows = new Map<string, number>();
  /** Recent share of this worker's time spent prefilling (for the step budget). */
  readonly prefill = new PrefillShare();
  /** When this worker's last step that prefilled anything was planned (batched admission). */
  lastPrefillS: number | undefined;

  constructor(public state: WorkerState) {}

  add(r: TrackedRequest): void {
    this.running.set(r.spec.id, r);
    this.taskRows.set(r.spec.task, (this.taskRows.get(r.spec.task) ?? 0) + 1);
    r.phase = 'running';
    r.workerId = this.state.id;
  }

  remove(r: TrackedRequest): void {
    if (!this.running.delete(r.spec.id)) return;
    const n = (this.taskRows.get(r.spec.task) ?? 1) - 1;
    if (n === 0) this.taskRows.delete(r.spec.task);
    else this.taskRows.set(r.spec.task, n);
  }
}

export function validateWorkerState(s: WorkerState): void {
  for (const k of ['kvBlocksTotal', 'blockSize', 'maxBatchRows', 'maxPrefillTokens'] as const) {
    if (!Number.isInteger(s[k]) || s[k] < 1) throw new Error(`worker "${s.id}": ${k} must be a positive integer, got ${s[k]}`);
  }
  if (s.stepCost !== undefined) {
    for (const [k, v] of Object.entries(s.stepCost)) {
      if (!(typeof v === 'number' && v >= 0)) throw new Error(`worker "${s.id}": stepCost.${k} must be a number >= 0, got ${v}`);
    }
  }
}
