/**
 * Per-task prefill queues, each a heap ordered by the policy's static waiting key, plus one
 * arrival-ordered heap over all of them (for starvation promotion and early abort). Entries are
 * removed lazily: an entry is live only while its request is waiting with the same version.
 */
import { compareKeys, Heap } from './heap';
import { TrackedRequest } from './tracked';

export interface QueueEntry {
  readonly r: TrackedRequest;
  readonly version: number;
  readonly key: number[];
}

function live(e: QueueEntry): boolean {
  return e.r.phase === 'waiting' && e.r.version === e.version;
}

const byKey = (a: QueueEntry, b: QueueEntry): number => compareKeys(a.key, b.key) || a.r.spec.arrivalS - b.r.spec.arrivalS;
const byArrival = (a: QueueEntry, b: QueueEntry): number => a.r.spec.arrivalS - b.r.spec.arrivalS;

export class WaitingQueues {
  private readonly tasks = new Map<string, Heap<QueueEntry>>();
  private readonly arrivals = new Heap<QueueEntry>(byArrival);
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
  }

  /** Call when a waiting request leaves the queues (admitted, aborted, cancelled). */
  noteRemoved(): void {
    this.waiting -= 1;
  }

  /** The first live entry of a task queue, or undefined (drops the task when empty). */
  head(task: string): QueueEntry | undefined {
    const h = this.tasks.get(task);
    if (h === undefined) return undefined;
    for (let e = h.peek(); e !== undefined; e = h.peek()) {
      if (live(e)) return e;
      h.pop();
    }
    this.tasks.delete(task);
    return undefined;
  }

  /** Live heads of every task queue. */
  heads(): QueueEntry[] {
    const out: QueueEntry[] = [];
    for (const task of [...this.tasks.keys()]) {
      const e = this.head(task);
      if (e !== undefined) out.push(e);
    }
    return out;
  }

  /** Live heads of the given tasks' queues (tasks without waiting requests are skipped). */
  headsOf(tasks: Iterable<string>): QueueEntry[] {
    const out: QueueEntry[] = [];
    for (const task of [...tasks]) {
      const e = this.head(task);
      if (e !== undefined) out.push(e);
    }
    return out;
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
