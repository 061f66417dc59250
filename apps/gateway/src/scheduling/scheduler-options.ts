/**
 * Maps the gateway's configuration onto @inlaid/scheduling (pure): the Scheduler's options from
 * SchedulingConfig, and a worker's scheduling capacity from the WorkerState it reports.
 */
import type { SchedulingConfig } from '@inlaid/config';
import type { SchedulerConfigInput, StepCost, WorkerState } from '@inlaid/scheduling';
import type { worker } from '@inlaid/proto';
import { sloOfMs } from './task-slos';

export function schedulerOptions(c: SchedulingConfig): SchedulerConfigInput {
  return {
    policy: c.policy,
    predictor: c.predictor,
    inlaid: {
      beta: c.beta,
      triage: c.triage,
      budgetFixedPrefill: c.budgetFixedPrefill,
      batchedAdmission: { needRoom: c.batchNeedRoom, budgetRoom: c.batchBudgetRoom },
    },
    maxLoras: c.maxLoras,
    defaultSlo: sloOfMs({ ttftMs: c.sloTtftMs, tpotMs: c.sloTpotMs }),
    abortHopeless: c.abortHopeless,
  };
}

/**
 * The capacity the Scheduler plans against for one worker: its real KV cache (blocks and block size, as
 * reported), and the configured row and per-pass prefill limits (the worker does not report its
 * --max-num-seqs), with the step cost of INLAID_COST_MODEL when one is configured. Null until the worker
 * has reported a KV cache.
 */
export function workerCapacity(addr: string, state: worker.WorkerState | null, c: SchedulingConfig, stepCost?: StepCost): WorkerState | null {
  if (state === null || state.totalKvBlocks < 1 || state.blockSize < 1) return null;
  return {
    id: addr,
    kvBlocksTotal: state.totalKvBlocks,
    blockSize: state.blockSize,
    maxBatchRows: c.workerRows,
    maxPrefillTokens: c.workerPrefillTokens,
    ...(stepCost === undefined ? {} : { stepCost }),
  };
}
