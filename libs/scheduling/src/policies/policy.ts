/**
 * The policy contract. A policy only ranks requests and says which tasks may join a batch; the
 * Scheduler owns queues, KV accounting, preemption mechanics and starvation promotion.
 * Keys are compared lexicographically; smaller = served first / evicted last.
 */
import { BatchedAdmissionOptions } from '../batch-gate';
import { PolicyName } from '../config';
import { TrackedRequest } from '../tracked';

/** Read-only view of one worker's running batch. */
export interface BatchView {
  /** Rows per task currently resident on the worker. */
  readonly taskRows: ReadonlyMap<string, number>;
}

export interface Policy {
  readonly name: PolicyName;
  /** Stop admitting at the first request that does not fit (strict order) instead of skipping it. */
  readonly headOfLineBlocking: boolean;
  /**
   * A starving request (waiting > starvationS) that cannot go in stops all other admissions until it can,
   * and skips the memory-aware projection (true); or it only goes first wherever it fits under the same
   * rules as the rest (false: a stalled batch would make requests that can still meet their SLO miss it).
   */
  readonly starvingPausesAdmission: boolean;
  /**
   * SLO triage (triage.ts): the Scheduler marks waiting requests past their TTFT SLO as `hopeless` and asks
   * for their waiting key again; the policy's keys must then order them after every saveable request.
   */
  readonly triage: boolean;
  /**
   * With batched admission active, whether the step budget's prefill share also counts each prefill step's fixed
   * cost `prefillStepS`, given the tightest TPOT SLO of the rows it stretches. Absent = never.
   */
  countsFixedPrefill?(prefillStepS: number, tpotS: number): boolean;
  /**
   * Whether a starving request (waiting > starvationS) goes ahead of everything else. Under triage a request
   * that has already lost its SLO is not promoted: it keeps its place behind the saveable ones (its aging key
   * still orders it among the lost), so a long overload cannot turn the worker over to lost work.
   */
  promotesStarving(r: TrackedRequest): boolean;
  /** Called when a request first arrives (before its first waitingKey). */
  onArrive(r: TrackedRequest): void;
  /** Order within the waiting queues; must not change while the request waits. */
  waitingKey(r: TrackedRequest): number[];
  /**
   * Order among task-queue heads for one worker's batch (defaults to the waiting key). Among tasks that are all
   * outside the batch it must order as the waiting key does (admission reads those heads in the waiting order).
   */
  headKey(r: TrackedRequest, waitingKey: number[], batch: BatchView): number[];
  /** Memory-pressure victim order among running requests: the largest key is evicted first. */
  evictionKey(r: TrackedRequest): number[];
  /** Whether a request of `task` may join the batch now. */
  canJoin(task: string, batch: BatchView): boolean;
  /**
   * Whether a request of `task` that `canJoin` refused may still take rows or KV that would otherwise
   * sit idle this step (work-conserving fill, asked only after every joinable candidate was tried).
   */
  canFill(task: string, batch: BatchView): boolean;
  /**
   * Optional shortcut for admission: true when `canJoin` ('join') or `canFill` ('fill') refuses every task that is
   * not in `batch`, and will while the batch only gains rows and tasks. Admission then does not read those tasks'
   * heads in that phase. Absent = admission asks about each head.
   */
  refusesNewTasks?(phase: 'join' | 'fill', batch: BatchView): boolean;
  /**
   * When defined, every admission must keep the worker's projected decode step within this fraction of
   * the TPOT SLO, net of the prefill share (see step-budget.ts); undefined = no budget on joinable
   * candidates, and the fill (if any) is bounded by the plain TPOT.
   */
  readonly budgetSafety: number | undefined;
  /**
   * With a budget: while no request that could still meet its SLO is arriving, a candidate past its TTFT may use
   * the slack the saveable rows have banked against their TPOT SLO (step-budget.ts). Absent = no.
   */
  readonly lostWorkUsesSlack?: boolean;
  /** Batched prefill admission (batch-gate.ts); undefined = admit whenever there is room (the baselines). */
  readonly batchedAdmission?: BatchedAdmissionOptions;
  /** KV context tokens to reserve when admitting or keeping `r` (>= its context + 1). */
  reservedTokens(r: TrackedRequest): number;
  /** Called after each generated token. */
  onToken(r: TrackedRequest): void;
}
