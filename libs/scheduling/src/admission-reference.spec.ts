/**
 * Test oracle for admission.ts: the admission algorithm as it was before the head index (session 8), with the
 * fixed tie-break: every round collects the live head of every task queue from scratch and pops them from one heap
 * in the policy's head order. Same starving phase, join and fill phases and pruning; the fit of one request
 * (admission-fit.ts) is shared, as it is not what the head index changed. Exported for
 * admission-order.spec.ts, which checks that the real Admission makes exactly the same decisions; the test here only
 * checks the oracle's own order on a small case. `headsOf` (the live heads of named task queues, collected afresh)
 * is the oracle's only: the real Admission reads the head index (WaitingQueues.cursor).
 */
import { AdmissionDeps } from './admission';
import { Budget, openBudget, tryAdmit } from './admission-fit';
import { BatchGate } from './batch-gate';
import { resolveConfig } from './config';
import { Heap } from './heap';
import { createPolicy } from './policies/factory';
import { compareRequests } from './request-order';
import { StepGate } from './step-budget';
import { request, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { Decision } from './types';
import { QueueEntry, WaitingQueues } from './waiting-queues';
import { WorkerSlot } from './worker-slot';

/** Live heads of the given tasks' queues, in the order given (tasks without waiting requests are skipped). */
export function headsOf(waiting: WaitingQueues, tasks: Iterable<string>): QueueEntry[] {
  const out: QueueEntry[] = [];
  for (const task of [...tasks]) {
    const e = waiting.head(task);
    if (e !== undefined) out.push(e);
  }
  return out;
}

export class ReferenceAdmission {
  private readonly gate = new StepGate();

  /** `tasks`: every task name that may have waiting requests (the heads are collected from these). */
  constructor(
    private readonly d: AdmissionDeps,
    private readonly tasks: () => Iterable<string>,
  ) {}

  admit(slot: WorkerSlot, now: number, accepts: (task: string) => boolean, saveableArriving: boolean, out: Decision[]): void {
    const { policy, waiting, batching } = this.d;
    if (slot.running.size >= slot.state.maxBatchRows || waiting.size === 0 || !batching.release(slot, now)) return;
    const b = openBudget(slot, policy);
    const gate = this.gate.begin(slot, now, policy.budgetSafety, saveableArriving, policy.lostWorkUsesSlack === true);
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
    const all = headsOf(waiting, closedToNew() ? slot.taskRows.keys() : this.tasks());
    const heads = all.filter((e) => accepts(e.r.spec.task));
    const refused = this.admitHeads(slot, heads, b, (r) => policy.canJoin(r.spec.task, slot) && gate.join(r, b.usedBlocks), out, closed, closedToNew);
    if (refused !== 'full' && refused.length > 0 && b.rows > 0) {
      this.admitHeads(slot, refused, b, (r) => policy.canFill(r.spec.task, slot) && gate.fill(r, b.usedBlocks), out, closed, closedToNew);
    }
  }

  private admitHeads(
    slot: WorkerSlot,
    heads: readonly QueueEntry[],
    b: Budget,
    allowed: (r: TrackedRequest) => boolean,
    out: Decision[],
    closed: () => boolean,
    closedToNew: () => boolean,
  ): QueueEntry[] | 'full' {
    const { policy, waiting } = this.d;
    type Head = { e: QueueEntry; key: number[] };
    const heap = new Heap<Head>((x, y) => compareRequests(x.key, x.e.r, y.key, y.e.r));
    const pushHead = (e: QueueEntry | undefined): void => {
      if (e !== undefined) heap.push({ e, key: policy.headKey(e.r, e.key, slot) });
    };
    const refused: QueueEntry[] = [];
    for (const e of heads) pushHead(e);
    const inBatch = (x: Head): boolean => slot.taskRows.has(x.e.r.spec.task);
    let pruned = false;
    for (let h = heap.pop(); h !== undefined; h = heap.pop()) {
      if (closed()) return 'full';
      const r = h.e.r;
      if (!pruned && closedToNew()) {
        pruned = true;
        heap.retain(inBatch);
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

describe('ReferenceAdmission (the oracle of admission-order.spec)', () => {
  it('admits by head key, then arrival, then enqueue order, batch tasks first', () => {
    const policy = createPolicy(resolveConfig({ policy: 'inlaid', predictor: 'none' }));
    const waiting = new WaitingQueues();
    const slot = new WorkerSlot(worker({ maxBatchRows: 5 }));
    const prediction = { p50: 8, lo: 8, hi: 8, points: [{ q: 0, value: 8 }, { q: 1, value: 8 }], support: 0 };
    const specs = [request('b0', 'b', 32, 1), request('a0', 'a', 32, 1), request('c0', 'c', 32, 0.5), request('a1', 'a', 32, 1), request('d0', 'd', 32, 1)];
    const all = specs.map((spec, i) => newTracked(spec, { ttftS: 10, tpotS: 1 }, prediction, i));
    for (const r of all) waiting.push(r, policy.waitingKey(r));
    slot.add(all[4]); // d0 runs: task d is in the batch
    waiting.noteRemoved();
    waiting.push(newTracked(request('d1', 'd', 32, 2), { ttftS: 10, tpotS: 1 }, prediction, 5), [0, 1e9]);
    const deps = { policy, waiting, batching: new BatchGate(undefined), starving: () => false, dropExceedsKv: () => undefined };
    const out: Decision[] = [];
    new ReferenceAdmission(deps, () => ['a', 'b', 'c', 'd']).admit(slot, 2, () => true, false, out);
    expect(out.map((d) => (d.kind === 'admit' ? d.requestId : d.kind))).toEqual(['d1', 'c0', 'b0', 'a0']);
  });
});

describe('headsOf (the oracle\'s heads)', () => {
  const prediction = { p50: 10, lo: 10, hi: 10, points: [{ q: 0, value: 10 }, { q: 1, value: 10 }], support: 0 };
  const tracked = (id: string, task: string): TrackedRequest => newTracked(request(id, task, 32, 0), { ttftS: 2, tpotS: 0.05 }, prediction, 0);

  it('returns the live heads of the named tasks only, skipping tasks with nothing waiting', () => {
    const q = new WaitingQueues();
    const a1 = tracked('a1', 'a');
    const a2 = tracked('a2', 'a');
    const b1 = tracked('b1', 'b');
    q.push(a1, [2]);
    q.push(a2, [1]);
    q.push(b1, [0]);
    expect(headsOf(q, ['a', 'zzz']).map((e) => e.r.spec.id)).toEqual(['a2']);
    a2.phase = 'running'; // admitted: its entry goes stale
    expect(headsOf(q, ['b', 'a']).map((e) => e.r.spec.id)).toEqual(['b1', 'a1']);
  });
});
