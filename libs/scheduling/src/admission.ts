/**
 * Admission: which waiting requests join one worker's next step. Starving requests first (oldest first), then the
 * task-queue heads in the policy's head order while the policy lets their task join, then (work-conserving) the
 * heads it refused, into rows that would otherwise sit idle. Every admission must fit the worker's rows, its
 * prefill-token cap and its KV; with a memory-aware policy the KV reserved for the predicted output too (not for a
 * starving request under a strict policy, nor for the first row of an empty batch). Inlaid's admissions also pass
 * the SLO-aware step budget of step-budget.ts and, on workers with a fixed prefill-step cost, the batched-admission
 * gate of batch-gate.ts. The Scheduler owns the queues and the request records; this module only moves requests
 * from the queues into a worker's running set and says so in the step's decisions.
 */
import { openBudget, tryAdmit, type Budget } from './admission-fit';
import { BatchGate } from './batch-gate';
import { Heap } from './heap';
import { byHead, Head, OtherHeads } from './other-heads';
import { Policy } from './policies/policy';
import { StepGate } from './step-budget';
import { TrackedRequest } from './tracked';
import { Decision } from './types';
import { QueueEntry, WaitingQueues } from './waiting-queues';
import { WorkerSlot } from './worker-slot';

/** The Scheduler's state and operations admission works with. */
export interface AdmissionDeps {
  readonly policy: Policy;
  readonly waiting: WaitingQueues;
  readonly batching: BatchGate;
  /** Whether `r` has waited longer than the starvation limit at `now`. */
  starving(r: TrackedRequest, now: number): boolean;
  /** Forgets `r` (it can never fit this worker's KV) and records the abort. */
  dropExceedsKv(r: TrackedRequest, out: Decision[]): void;
}

export class Admission {
  /** Both reused by every round (one round runs at a time; `begin` resets them). */
  private readonly gate = new StepGate();
  private readonly others = new OtherHeads();

  constructor(private readonly d: AdmissionDeps) {}

  /**
   * Admits into `slot` at `now` the waiting requests of tasks that `accepts` takes, appending the decisions to
   * `out`. `saveableArriving`: a request that can still meet its SLO may be arriving (for the step budget).
   */
  admit(slot: WorkerSlot, now: number, accepts: (task: string) => boolean, saveableArriving: boolean, out: Decision[]): void {
    const { policy, waiting, batching } = this.d;
    if (slot.running.size >= slot.state.maxBatchRows || waiting.size === 0 || !batching.release(slot, now)) return;
    const b = openBudget(slot, policy);
    const gate = this.gate.begin(slot, now, policy.budgetSafety, saveableArriving, policy.lostWorkUsesSlack === true);
    // Starving requests first, oldest first. Strict policies: if one cannot go in, admit nothing else until
    // it can. Lenient ones (inlaid): it goes first wherever it fits under the same memory projection and
    // step budget as the rest, and one that does not fit leaves the rest to the policy's order.
    // The oldest one belonging to another worker ends this phase here (that worker pauses for it).
    const strict = policy.starvingPausesAdmission;
    for (let r = waiting.oldest(); r !== undefined && this.d.starving(r, now) && policy.promotesStarving(r); r = waiting.oldest()) {
      if (!accepts(r.spec.task)) break;
      const joinable = policy.canJoin(r.spec.task, slot) || policy.canFill(r.spec.task, slot);
      if (!joinable || (!strict && !gate.join(r, b.usedBlocks))) {
        if (strict) return;
        break;
      }
      const res = tryAdmit(this.d, slot, r, b, strict, out);
      if (res !== 'ok' && r.phase !== 'aborted') {
        if (strict) return;
        break;
      }
    }
    const closed = (): boolean => gate.closed(b.usedBlocks);
    if (closed()) return;
    const closedToNew = (): boolean => gate.closedToNewTasks(b.usedBlocks);
    // The batch's tasks' heads go into admitHeads' heap; every other task's head is read in the waiting order from the
    // head index (other-heads.ts). Already closed to new tasks: only the former can be admitted, so none are read.
    const others = this.others.begin(waiting, accepts, (e) => policy.headKey(e.r, e.key, slot), !closedToNew());
    const heads: QueueEntry[] = [];
    for (const task of slot.taskRows.keys()) {
      const e = accepts(task) ? waiting.head(task) : undefined;
      if (e !== undefined) heads.push(e);
    }
    const refused = this.admitHeads(slot, heads, others, 'join', b, (r) => policy.canJoin(r.spec.task, slot) && gate.join(r, b.usedBlocks), out, closed, closedToNew);
    // Work-conserving fill: rows still free after every joinable candidate go to the refused ones (those held, and
    // the other tasks' heads the join phase left unread because the policy refused every new task; not looked for
    // when the policy refuses every new task in the fill too, as fifo and mlfq always do).
    const othersToFill = (): boolean => policy.refusesNewTasks?.('fill', slot) !== true && others.peek() !== undefined;
    if (refused !== 'full' && (refused.length > 0 || othersToFill()) && b.rows > 0) {
      this.admitHeads(slot, refused, others, 'fill', b, (r) => policy.canFill(r.spec.task, slot) && gate.fill(r, b.usedBlocks), out, closed, closedToNew);
    }
  }

  /**
   * Admits task-queue heads in the policy's head order while `allowed` says their task may join: the merge of
   * `heads` (plus each admitted task's next head) and the untaken `others`. The others are not read while the policy
   * refuses every task outside the batch in this `phase` (Policy.refusesNewTasks): each would be refused, and they
   * stay unread for the fill. Returns 'full' when admission must stop (no rows left, or a head-of-line block), else
   * the held heads refused by `allowed`. Once `closedToNew` holds (the step budget refuses any task not in the batch,
   * for the rest of the round: StepGate.closedToNewTasks), the heads of other tasks are dropped unevaluated: both
   * `allowed` predicates (join and fill) would refuse them, so the decisions are the same.
   */
  private admitHeads(
    slot: WorkerSlot,
    heads: readonly QueueEntry[],
    others: OtherHeads,
    phase: 'join' | 'fill',
    b: Budget,
    allowed: (r: TrackedRequest) => boolean,
    out: Decision[],
    closed: () => boolean,
    closedToNew: () => boolean,
  ): QueueEntry[] | 'full' {
    const { policy, waiting } = this.d;
    const heap = new Heap<Head>(byHead);
    const pushHead = (e: QueueEntry | undefined): void => {
      if (e === undefined) return;
      others.take(e.r.spec.task);
      heap.push({ e, key: policy.headKey(e.r, e.key, slot) });
    };
    const refused: QueueEntry[] = [];
    for (const e of heads) pushHead(e);
    const inBatch = (x: Head): boolean => slot.taskRows.has(x.e.r.spec.task);
    let pruned = false;
    for (;;) {
      const held = heap.peek();
      const other = policy.refusesNewTasks?.(phase, slot) === true ? undefined : others.peek();
      const h = other !== undefined && (held === undefined || byHead(other, held) < 0) ? others.pop() : heap.pop();
      if (h === undefined) break;
      if (closed()) return 'full';
      const r = h.e.r;
      if (!pruned && closedToNew()) {
        pruned = true;
        heap.retain(inBatch);
        others.drop();
      }
      if (pruned && !inBatch(h)) continue;
      if (!allowed(r)) {
        refused.push(h.e);
        continue;
      }
      const res = tryAdmit(this.d, slot, r, b, false, out);
      if (res === 'full') return 'full';
      if (res === 'nofit') {
        if (policy.headOfLineBlocking && r.phase !== 'aborted') return 'full';
        if (r.phase === 'aborted') pushHead(waiting.head(r.spec.task));
        continue;
      }
      pushHead(waiting.head(r.spec.task));
    }
    return refused;
  }
}
