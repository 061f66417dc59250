/** The scheduler's internal record of one request (mutable, owned by the Scheduler). */
import { Prediction } from './predictor/types';
import { RequestSpec, Slo } from './types';

export type RequestPhase = 'waiting' | 'running' | 'finished' | 'aborted';

export interface TrackedRequest {
  readonly spec: RequestSpec;
  readonly slo: Slo;
  readonly prediction: Prediction;
  /** Enqueue order in its scheduler (0, 1, ...): the last tie-break of every waiting order (request-order.ts). */
  readonly seq: number;
  phase: RequestPhase;
  workerId: string | undefined;
  generated: number;
  firstTokenS: number | undefined;
  preemptions: number;
  /** Bumped each time the request (re-)enters the waiting queues; stale queue entries are skipped. */
  version: number;
  /**
   * Set once a waiting request that never produced a token has passed its TTFT SLO (only under a policy with
   * `triage`): it can no longer meet its SLO and is ordered after every request that still can.
   */
  hopeless: boolean;
  /** MLFQ level (0 = highest) and tokens spent in it; unused by other policies. */
  level: number;
  levelTokens: number;
}

/** A request as it first enters the waiting queues (the `seq`-th in its scheduler): no worker, no output, level 0. */
export function newTracked(spec: RequestSpec, slo: Slo, prediction: Prediction, seq: number): TrackedRequest {
  return {
    spec,
    slo,
    prediction,
    seq,
    phase: 'waiting',
    workerId: undefined,
    generated: 0,
    firstTokenS: undefined,
    preemptions: 0,
    hopeless: false,
    version: 0,
    level: 0,
    levelTokens: 0,
  };
}

/** Context tokens resident in KV (prompt plus generated output). */
export function contextTokens(r: TrackedRequest): number {
  return r.spec.promptTokens + r.generated;
}
