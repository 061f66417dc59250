/**
 * The fixed order of waiting requests: the policy's key, then arrival time, then the scheduler's sequence number
 * (the order requests were first enqueued). The sequence number makes it a total order, so requests with equal keys
 * and equal arrival times (common: traces store arrivals in microseconds) are served in enqueue order, whatever
 * data structure holds them; before it, their order was whatever the binary heap's array shape gave.
 */
import { compareKeys } from './heap';
import { TrackedRequest } from './tracked';

/** Negative when `a` under key `ka` comes before `b` under key `kb`; 0 only for the same request. */
export function compareRequests(ka: readonly number[], a: TrackedRequest, kb: readonly number[], b: TrackedRequest): number {
  return compareKeys(ka, kb) || a.spec.arrivalS - b.spec.arrivalS || a.seq - b.seq;
}

/** Arrival order (oldest first), ties by sequence number. */
export function compareArrivals(a: TrackedRequest, b: TrackedRequest): number {
  return a.spec.arrivalS - b.spec.arrivalS || a.seq - b.seq;
}
