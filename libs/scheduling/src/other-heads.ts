/**
 * One admission round's view of the task queues it has not taken yet: their heads, read in the waiting order
 * from the head index (head-index.ts) instead of collected and heap-sorted every step. Admission merges them
 * with the heads it holds in its own heap (of the batch's tasks and of each task it admitted from), and that
 * merge is the same total order a heap of every head would pop: a policy's head key orders the tasks outside the
 * batch as their waiting key does (Policy.headKey), and no head is seen twice: a task is taken when its heads go into
 * admission's heap (and skipped here from then on), and a head read here that admission does not admit stays where
 * it is, behind the cursor. Tasks the worker does not accept are skipped.
 */
import { compareRequests } from './request-order';
import { HeadCursor } from './head-index';
import { live, QueueEntry, WaitingQueues } from './waiting-queues';

/** A task-queue head with its head key for this worker's batch. */
export interface Head {
  readonly e: QueueEntry;
  readonly key: number[];
}

/** The admission order of heads: head key, arrival, sequence number. */
export function byHead(x: Head, y: Head): number {
  return compareRequests(x.key, x.e.r, y.key, y.e.r);
}

/** One per Admission, reset by `begin` for each round (rounds run one at a time), so a round allocates no set. */
export class OtherHeads {
  private readonly taken = new Set<string>();
  private cursor: HeadCursor | undefined;
  private front: Head | undefined;
  private waiting!: WaitingQueues;
  private accepts!: (task: string) => boolean;
  private headKey!: (e: QueueEntry) => number[];

  /** Starts a round over `waiting`'s heads; `read` false: none to read (the round only looks at the tasks it takes). */
  begin(waiting: WaitingQueues, accepts: (task: string) => boolean, headKey: (e: QueueEntry) => number[], read: boolean): this {
    this.waiting = waiting;
    this.accepts = accepts;
    this.headKey = headKey;
    this.taken.clear();
    this.cursor = read ? waiting.cursor() : undefined;
    this.front = undefined;
    return this;
  }

  /** Marks `task` as held by admission: its heads are in admission's heap, and no longer read here. */
  take(task: string): void {
    this.taken.add(task);
  }

  /** The next head of a task not taken yet, with its head key; undefined when none is left. */
  peek(): Head | undefined {
    const c = this.cursor;
    if (c === undefined) return undefined;
    for (let e = c.peek(); e !== undefined; e = c.peek()) {
      const task = e.r.spec.task;
      if (this.taken.has(task) || !this.accepts(task)) c.advance();
      else if (!live(e)) this.waiting.head(task); // replaces the stale entry with the task's live head, further on
      else {
        if (this.front?.e !== e) this.front = { e, key: this.headKey(e) };
        return this.front;
      }
    }
    return undefined;
  }

  /** Reads past the head `peek` gives, and returns it. */
  pop(): Head | undefined {
    const h = this.peek();
    if (h === undefined) return undefined;
    this.cursor?.advance();
    this.front = undefined;
    return h;
  }

  /** Forgets the heads not taken yet, for the rest of the round. */
  drop(): void {
    this.cursor = undefined;
    this.front = undefined;
  }
}
