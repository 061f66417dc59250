/**
 * Per-task prefill queues, each a heap ordered by the policy's static waiting key (request-order.ts), the queues'
 * heads in that order across steps (head-index.ts, for admission), plus one arrival-ordered heap over all of them
 * (for starvation promotion and early abort). Entries are removed lazily: an entry is live only while its request
 * is waiting with the same version.
 */
import { HeadCursor, HeadIndex } from './head-index';
import { Heap } from './heap';
import { compareArrivals, compareRequests } from './request-order';
import { TrackedRequest } from './tracked';

export interface QueueEntry {
  readonly r: TrackedRequest;
  readonly version: number;
  readonly key: number[];
}

export function live(e: QueueEntry): boolean {
  return e.r.phase === 'waiting' && e.r.version === e.version;
}

const byKey = (a: QueueEntry, b: QueueEntry): number => compareRequests(a.key, a.r, b.key, b.r);
const byArrival = (a: QueueEntry, b: QueueEntry): number => compareArrivals(a.r, b.r);

export class WaitingQueues {
  private readonly tasks = new Map<string, Heap<QueueEntry>>();
  private readonly arrivals = new Heap<QueueEntry>(byArrival);
  /** Per task, an entry no later than any of its live ones (its head, or a stale one that was). */
  private readonly index = new HeadIndex(byKey);
  private waiting = 0;

  /** Number of waiting requests. */
  get size(): number {
    return this.waiting;
  }

  push(r: TrackedRequest, key: number[]): void {
    r.phase = 'waiting';
    r.workerId = undefined;
    this.insert(r, key);
    this.waiting += 1;
  }

  /** Gives a waiting request a new key (its old entries go stale); the count is unchanged. */
  rekey(r: TrackedRequest, key: number[]): void {
    if (r.phase !== 'waiting') throw new Error(`rekey of request "${r.spec.id}" that is ${r.phase}`);
    this.insert(r, key);
  }

  private insert(r: TrackedRequest, key: number[]): void {
    r.version += 1;
    const e: QueueEntry = { r, version: r.version, key };
    let h = this.tasks.get(r.spec.task);
    if (h === undefined) {
      h = new Heap<QueueEntry>(byKey);
      this.tasks.set(r.spec.task, h);
    }
    h.push(e);
    this.arrivals.push(e);
    const cur = this.index.get(r.spec.task);
    if (cur === undefined || byKey(e, cur) < 0) this.index.set(e);
  }

  /** Call when a waiting request leaves the queues (admitted, aborted, cancelled). */
  noteRemoved(): void {
    this.waiting -= 1;
  }

  /** The first live entry of a task queue, or undefined (drops the task when empty); updates the head index. */
  head(task: string): QueueEntry | undefined {
    const h = this.tasks.get(task);
    if (h === undefined) {
      this.index.delete(task);
      return undefined;
    }
    for (let e = h.peek(); e !== undefined; e = h.peek()) {
      if (live(e)) {
        this.index.set(e);
        return e;
      }
      h.pop();
    }
    this.tasks.delete(task);
    this.index.delete(task);
    return undefined;
  }

  /**
   * Reads the task queues' heads in the waiting order: `peek` gives an entry of the index, which may be stale (then
   * `head(task)` of its task replaces it further on, and the cursor reads on from where it was).
   */
  cursor(): HeadCursor {
    return new HeadCursor(this.index);
  }

  /** Entries of the head index in order, live or stale (for tests). */
  indexed(): readonly QueueEntry[] {
    return this.index.entries();
  }

  /** The oldest live waiting request. */
  oldest(): TrackedRequest | undefined {
    for (let e = this.arrivals.peek(); e !== undefined; e = this.arrivals.peek()) {
      if (live(e)) return e.r;
      this.arrivals.pop();
    }
    return undefined;
  }
}
