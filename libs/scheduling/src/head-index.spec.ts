import { HeadIndex } from './head-index';
import { OtherHeads } from './other-heads';
import { Prediction } from './predictor/types';
import { compareRequests } from './request-order';
import { Scheduler } from './scheduler';
import { request, seededRandom, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { live, QueueEntry, WaitingQueues } from './waiting-queues';

const SLO = { ttftS: 2, tpotS: 0.05 };
const FLAT: Prediction = { p50: 8, lo: 8, hi: 8, points: [{ q: 0, value: 8 }, { q: 1, value: 8 }], support: 0 };
const byKey = (a: QueueEntry, b: QueueEntry): number => compareRequests(a.key, a.r, b.key, b.r);

/** The live head of every task, from scratch: each task's smallest live entry, all sorted. */
function headsFromScratch(entries: readonly QueueEntry[]): QueueEntry[] {
  const best = new Map<string, QueueEntry>();
  for (const e of entries) {
    if (!live(e)) continue;
    const cur = best.get(e.r.spec.task);
    if (cur === undefined || byKey(e, cur) < 0) best.set(e.r.spec.task, e);
  }
  return [...best.values()].sort(byKey);
}

describe('HeadIndex', () => {
  it('keeps its entries sorted through replacements and deletions, and finds positions after any entry', () => {
    const rnd = seededRandom(7);
    const idx = new HeadIndex(byKey);
    for (let i = 0; i < 400; i++) {
      const task = `t${Math.floor(rnd() * 30)}`;
      const r = newTracked(request(`r${i}`, task, 8, Math.floor(rnd() * 4)), SLO, FLAT, i);
      if (rnd() < 0.2) idx.delete(task);
      else idx.set({ r, version: 0, key: [Math.floor(rnd() * 3)] });
      const xs = idx.entries();
      expect([...xs].sort(byKey)).toEqual(xs);
      expect(new Set(xs.map((e) => e.r.spec.task)).size).toBe(xs.length);
      const probe = xs[Math.floor(rnd() * xs.length)];
      if (probe !== undefined) expect(idx.at(idx.after(probe))).toBe(xs[xs.indexOf(probe) + 1]);
    }
  });
});

describe('WaitingQueues head index', () => {
  it('read through its cursor, equals a from-scratch sort of the live heads after random operations', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const rnd = seededRandom(seed);
      const q = new WaitingQueues();
      const entries: QueueEntry[] = [];
      const reqs: TrackedRequest[] = [];
      const push = (r: TrackedRequest, key: number[], rekey: boolean): void => {
        if (rekey) q.rekey(r, key);
        else q.push(r, key);
        entries.push({ r, version: r.version, key });
      };
      for (let step = 0; step < 60; step++) {
        for (let n = Math.floor(rnd() * 8); n > 0; n--) {
          const r = newTracked(request(`r${reqs.length}`, `t${Math.floor(rnd() * 12)}`, 8, Math.floor(rnd() * 3)), SLO, FLAT, reqs.length);
          reqs.push(r);
          push(r, [Math.floor(rnd() * 3)], false); // few keys and arrivals: many exact ties, broken by seq
        }
        const waiting = reqs.filter((r) => r.phase === 'waiting');
        for (const r of waiting) {
          const u = rnd();
          if (u < 0.1) r.phase = 'running'; // admitted elsewhere: its entries go stale
          else if (u < 0.15) r.phase = 'aborted';
          else if (u < 0.22) push(r, [Math.floor(rnd() * 4)], true); // re-keyed (triage), earlier or later
        }
        for (const r of reqs.filter((x) => x.phase === 'running' && rnd() < 0.1)) push(r, [Math.floor(rnd() * 3)], false); // preempted
        // Read as admission does: stale entries are replaced by their task's live head, further on.
        const read: QueueEntry[] = [];
        const c = q.cursor();
        for (let e = c.peek(); e !== undefined; e = c.peek()) {
          if (!live(e)) q.head(e.r.spec.task);
          else {
            read.push(e);
            c.advance();
          }
        }
        expect(read).toEqual(headsFromScratch(entries));
        expect(q.indexed()).toEqual(read); // every stale entry met was replaced
      }
    }
  });
});

describe('OtherHeads', () => {
  it('skips taken tasks and tasks the worker does not accept, also after a taken task\'s head is replaced', () => {
    const q = new WaitingQueues();
    const rs = ['a', 'b', 'c', 'd'].map((t, i) => newTracked(request(`${t}0`, t, 8, i), SLO, FLAT, i));
    rs.forEach((r) => q.push(r, [0]));
    const a1 = newTracked(request('a1', 'a', 8, 5), SLO, FLAT, 4);
    q.push(a1, [0]);
    const others = new OtherHeads().begin(q, (t) => t !== 'c', (e) => e.key, true);
    others.take('b');
    expect(others.pop()?.e.r.spec.id).toBe('a0');
    rs[0].phase = 'running'; // admitted: admission takes task a and holds its next head, a1, later in the order
    expect(q.head('a')?.r.spec.id).toBe('a1');
    others.take('a');
    expect(others.pop()?.e.r.spec.id).toBe('d0');
    expect(others.peek()).toBeUndefined(); // a1 is not read again
  });

  it('does not read a head again that it read and admission refused', () => {
    const q = new WaitingQueues();
    const rs = ['a', 'b'].map((t, i) => newTracked(request(`${t}0`, t, 8, i), SLO, FLAT, i));
    rs.forEach((r) => q.push(r, [0]));
    const others = new OtherHeads().begin(q, () => true, (e) => e.key, true);
    expect(others.pop()?.e.r.spec.id).toBe('a0');
    rs[1].phase = 'running'; // b0 admitted elsewhere: b's entry is replaced (deleted), the cursor finds its place again
    expect(q.head('b')).toBeUndefined();
    expect(others.peek()).toBeUndefined();
  });
});

describe('tied arrivals', () => {
  it('are admitted in enqueue order, whatever the tasks, and the same on every run', () => {
    const admitted = (): string[] => {
      const s = new Scheduler({ policy: 'inlaid', predictor: 'none', inlaid: { beta: 3 }, defaultSlo: SLO });
      s.onWorkerState(worker({ maxBatchRows: 6 }));
      for (let i = 0; i < 12; i++) s.enqueue(request(`r${i}`, `t${(i * 7) % 5}`, 32, 0)); // equal keys, equal arrivals
      return s.schedule(0, 'w0').decisions.map((d) => (d.kind === 'admit' ? d.requestId : d.kind));
    };
    // r0 (task t0) first by enqueue order, then t0's other requests (its task is now in the batch), then r1 (t2) and
    // t2's. A heap without the tie-break popped r4 (t3) after t0's: the last array slot moves to the root.
    expect(admitted()).toEqual(['r0', 'r5', 'r10', 'r1', 'r6', 'r11']);
    expect(admitted()).toEqual(admitted());
  });
});
