/**
 * Routes a request (pure over connection views; WorkersService.pick waits when it says so): among ready workers, prefer those that list
 * the model and are not catching up on it (pendingFor: AdapterCatchUp may still load, replace or unload it there),
 * then the fewest requests in flight. When none does and a worker is still catching up on the model, the request
 * waits for it (routeRequest answers null): it is a task the fleet may serve there in a moment, and its Prepare would
 * answer NOT_FOUND now. A model no worker lists, and none catches up on, still goes to a ready worker, whose Prepare
 * answers NOT_FOUND (its adapter list may be newer than ours).
 */
import { InlaidError } from '../common/inlaid-error';

export interface RoutableWorker {
  readonly addr: string;
  readonly ready: boolean;
  readonly inFlight: number;
  serves(model: string): boolean;
  /** Whether its adapter catch-up may still change `model` there (requests for it must not go there yet). */
  pendingFor(model: string): boolean;
}

const leastBusy = <W extends RoutableWorker>(workers: readonly W[]): W => workers.reduce((best, w) => (w.inFlight < best.inFlight ? w : best));

/** The worker for `model`, or null when the request should wait for a worker's catch-up; UNAVAILABLE when none is ready. */
export function routeRequest<W extends RoutableWorker>(workers: readonly W[], model: string): W | null {
  const ready = workers.filter((w) => w.ready);
  if (ready.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
  const settled = ready.filter((w) => !w.pendingFor(model));
  const serving = settled.filter((w) => w.serves(model));
  if (serving.length > 0) return leastBusy(serving);
  if (settled.length < ready.length) return null;
  return leastBusy(ready);
}

