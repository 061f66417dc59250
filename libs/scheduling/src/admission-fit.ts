/**
 * Whether one waiting request fits a worker's next step in an admission round, and taking it in when it does: the
 * free rows, the prefill-token cap, KV for its context and, with a memory-aware policy, the KV reserved for its
 * predicted output. Shared by admission.ts and its test oracle (admission-reference.spec.ts), which differ only in
 * the order they try the task-queue heads.
 */
import { blocksFor } from './kv';
import { Policy } from './policies/policy';
import { contextTokens, TrackedRequest } from './tracked';
import { Decision } from './types';
import { WaitingQueues } from './waiting-queues';
import { WorkerSlot } from './worker-slot';

/** 'full': admission stops; 'nofit': this request does not fit (another may). */
export type AdmitResult = 'ok' | 'full' | 'nofit';

/** What one admission round may still use on the worker. */
export interface Budget {
  rows: number;
  usedBlocks: number;
  committedBlocks: number;
  prefillTokens: number;
}

/** What taking a request in needs of the Scheduler (AdmissionDeps has it). */
export interface FitDeps {
  readonly policy: Policy;
  readonly waiting: WaitingQueues;
  /** Forgets `r` (it can never fit this worker's KV) and records the abort. */
  dropExceedsKv(r: TrackedRequest, out: Decision[]): void;
}

/** The round's budget on `slot`: its free rows, and the KV its running batch uses and has reserved. */
export function openBudget(slot: WorkerSlot, policy: Policy): Budget {
  const b: Budget = { rows: slot.state.maxBatchRows - slot.running.size, usedBlocks: 0, committedBlocks: 0, prefillTokens: 0 };
  for (const r of slot.running.values()) {
    b.usedBlocks += blocksFor(contextTokens(r) + 1, slot.state.blockSize);
    b.committedBlocks += blocksFor(policy.reservedTokens(r), slot.state.blockSize);
  }
  return b;
}

/**
 * Admits `r` into `slot` when it fits `b` (and charges it), appending the decision to `out`. `force`: a starving
 * request under a strict policy, which skips the memory-aware projection (as does the first row of an empty batch).
 */
export function tryAdmit(d: FitDeps, slot: WorkerSlot, r: TrackedRequest, b: Budget, force: boolean, out: Decision[]): AdmitResult {
  const { policy } = d;
  const { kvBlocksTotal, blockSize, maxPrefillTokens } = slot.state;
  if (b.rows <= 0) return 'full';
  const prefill = contextTokens(r);
  if (b.prefillTokens > 0 && b.prefillTokens + prefill > maxPrefillTokens) return policy.headOfLineBlocking || force ? 'full' : 'nofit';
  const need = blocksFor(prefill + 1, blockSize);
  if (need > kvBlocksTotal) {
    d.dropExceedsKv(r, out);
    return 'nofit';
  }
  const reserve = Math.max(need, blocksFor(policy.reservedTokens(r), blockSize));
  if (b.usedBlocks + need > kvBlocksTotal) return 'nofit';
  // Memory-aware projection; skipped for starving requests and for an empty batch (it must progress).
  if (!force && slot.running.size > 0 && b.committedBlocks + reserve > kvBlocksTotal) return 'nofit';
  d.waiting.noteRemoved();
  slot.add(r);
  b.rows -= 1;
  b.usedBlocks += need;
  b.committedBlocks += reserve;
  b.prefillTokens += prefill;
  out.push({ kind: 'admit', requestId: r.spec.id, workerId: slot.state.id, prefillTokens: prefill });
  return 'ok';
}
