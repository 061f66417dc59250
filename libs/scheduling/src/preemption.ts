/**
 * Preemption under memory pressure: before a worker's step, evict running requests, lowest priority first, until
 * the KV the step needs (every row's context plus its next token) fits the worker's budget. A starving request is
 * evicted last; among the rest the policy's eviction key decides (largest first). An evicted request drops its KV
 * and goes back to its queue (recomputed on re-admission); the last row of a batch that still does not fit can
 * never run on this worker and is aborted instead.
 */
import { compareKeys } from './heap';
import { blocksFor } from './kv';
import { Policy } from './policies/policy';
import { contextTokens, TrackedRequest } from './tracked';
import { Decision } from './types';
import { WorkerSlot } from './worker-slot';

/** The Scheduler's operations preemption works with. */
export interface PreemptionDeps {
  readonly policy: Policy;
  starving(r: TrackedRequest, now: number): boolean;
  /** Takes `r` off `slot` and puts it back in the waiting queues. */
  requeue(slot: WorkerSlot, r: TrackedRequest): void;
  /** Forgets `r` (it exceeds the worker's KV on its own) and records the abort. */
  dropExceedsKv(r: TrackedRequest, out: Decision[]): void;
}

/** Evicts lowest-priority running requests of `slot` until the next step's KV fits, appending the decisions to `out`. */
export function relieveMemory(d: PreemptionDeps, slot: WorkerSlot, now: number, out: Decision[]): void {
  const { kvBlocksTotal, blockSize } = slot.state;
  let used = 0;
  for (const r of slot.running.values()) used += blocksFor(contextTokens(r) + 1, blockSize);
  while (used > kvBlocksTotal && slot.running.size > 0) {
    let victim: TrackedRequest | undefined;
    let worst: number[] = [];
    for (const r of slot.running.values()) {
      const key = [d.starving(r, now) ? 0 : 1, ...d.policy.evictionKey(r)];
      if (victim === undefined || compareKeys(key, worst) > 0) [victim, worst] = [r, key];
    }
    const v = victim as TrackedRequest;
    used -= blocksFor(contextTokens(v) + 1, blockSize);
    if (slot.running.size === 1) {
      slot.remove(v);
      d.dropExceedsKv(v, out);
      return;
    }
    d.requeue(slot, v);
    out.push({ kind: 'preempt', requestId: v.spec.id, workerId: slot.state.id });
  }
}
