/**
 * The heads of the per-task waiting queues, kept in the waiting order (request-order.ts) across steps, so an
 * admission round reads them in order instead of collecting and heap-sorting every task's head each step (with
 * 1000 tasks that was most of the simulator's time). One entry per task: an entry that is no later than every
 * live entry of its task (WaitingQueues keeps this). It may be stale (its request left the queue); whoever meets a
 * stale entry asks WaitingQueues.head for the task's live head, which replaces it further on in the order.
 * A sorted array: O(log n) to find, O(n) memmove to insert or remove, a few per step; reading in order is O(1).
 */
import type { QueueEntry } from './waiting-queues';

export class HeadIndex {
  private readonly items: QueueEntry[] = [];
  private readonly byTask = new Map<string, QueueEntry>();
  /** Bumped on every change, so that a cursor finds its place again. */
  private changes = 0;

  constructor(private readonly before: (a: QueueEntry, b: QueueEntry) => number) {}

  get size(): number {
    return this.items.length;
  }

  get version(): number {
    return this.changes;
  }

  get(task: string): QueueEntry | undefined {
    return this.byTask.get(task);
  }

  /** Makes `e` the entry of its task (replacing the task's old one). */
  set(e: QueueEntry): void {
    const task = e.r.spec.task;
    const old = this.byTask.get(task);
    if (old === e) return;
    if (old !== undefined) this.removeEntry(old);
    this.items.splice(this.after(e, false), 0, e);
    this.byTask.set(task, e);
    this.changes += 1;
  }

  delete(task: string): void {
    const old = this.byTask.get(task);
    if (old === undefined) return;
    this.removeEntry(old);
    this.byTask.delete(task);
    this.changes += 1;
  }

  /** The entry at position `i` in order (undefined past the end). */
  at(i: number): QueueEntry | undefined {
    return this.items[i];
  }

  /** Every entry in order (for tests). */
  entries(): readonly QueueEntry[] {
    return this.items;
  }

  /**
   * The first position whose entry comes after `e` (`strict`), or not before it; 0 for undefined. The order is
   * total (request-order.ts), so this is exact whether or not `e` is still in the index.
   */
  after(e: QueueEntry | undefined, strict = true): number {
    if (e === undefined) return 0;
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = this.before(this.items[mid], e);
      if (c < 0 || (strict && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private removeEntry(e: QueueEntry): void {
    const i = this.after(e, false);
    if (this.items[i] !== e) throw new Error(`head index lost the entry of task "${e.r.spec.task}"`);
    this.items.splice(i, 1);
  }
}

/**
 * Reads a HeadIndex in order while it changes: after any change it resumes just after the last entry it passed.
 * Within an admission round an entry is only replaced by a later one of its task (a stale head by the live one;
 * arrivals and requeues, which may bring an earlier one, come between rounds), so nothing it still has to read
 * lands behind it; a replaced task it already passed is one admission has taken (see admission.ts).
 */
export class HeadCursor {
  private last: QueueEntry | undefined;
  private pos = 0;
  private seen: number;

  constructor(private readonly index: HeadIndex) {
    this.seen = index.version;
  }

  peek(): QueueEntry | undefined {
    if (this.seen !== this.index.version) {
      this.pos = this.index.after(this.last);
      this.seen = this.index.version;
    }
    return this.index.at(this.pos);
  }

  /** Passes the current entry. */
  advance(): void {
    const e = this.peek();
    if (e === undefined) return;
    this.last = e;
    this.pos += 1;
  }
}
