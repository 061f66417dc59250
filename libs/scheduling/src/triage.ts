/**
 * SLO triage (inlaid): a waiting request that has not produced its first token by its TTFT SLO can no longer
 * meet its SLO. The policy then orders it after every request that still can (instead of letting aging or
 * its short predicted output put it first), so under overload the worker spends its budget on requests it
 * can save. The deadlines are known at arrival, so one heap ordered by deadline finds the expired requests in
 * O(log n) each; a request is marked once and never unmarked.
 */
import { Heap } from './heap';
import { TrackedRequest } from './tracked';

interface Deadline {
  readonly r: TrackedRequest;
  readonly atS: number;
}

export class TtftDeadlines {
  private readonly heap = new Heap<Deadline>((a, b) => a.atS - b.atS);

  /** Tracks `r` from its arrival; call once per request. */
  add(r: TrackedRequest): void {
    this.heap.push({ r, atS: r.spec.arrivalS + r.slo.ttftS });
  }

  /**
   * Marks as hopeless, and returns, the requests still waiting without a first token whose TTFT SLO has
   * passed at `now` (strictly, as `pastTtft`). Requests already admitted are dropped from tracking: their first
   * token comes from the step they were admitted to.
   */
  expire(now: number): TrackedRequest[] {
    const out: TrackedRequest[] = [];
    for (let d = this.heap.peek(); d !== undefined && now - d.r.spec.arrivalS > d.r.slo.ttftS; d = this.heap.peek()) {
      this.heap.pop();
      const r = d.r;
      if (r.phase === 'waiting' && r.firstTokenS === undefined && !r.hopeless) {
        r.hopeless = true;
        out.push(r);
      }
    }
    return out;
  }
}
