/**
 * Routes a request (pure over connection views; WorkersService.pick waits when it says so): among ready workers, prefer those that list
 * the model and are not catching up on it (pendingFor: AdapterCatchUp may still load, replace or unload it there),
 * then the fewest requests in flight. When none does and a worker is still catching up on the model, the request
 * waits for it (routeRequest answers null): it is a task the fleet may serve there in a moment, and its Prepare would
 * answer NOT_FOUND now. Not when every worker holding it only unloads it there (unloadingFor: its task is deleted,
 * unloaded, or a newer job not loaded yet, while requests in flight there drain): the fleet serves no such task, so the
 * request gets its 404 at once (before: it waited for the drain, 30 s, and got a 503), never the held worker. A model no
 * worker lists, and none catches up on (or only to unload it), still goes to a ready worker not holding it, whose
 * Prepare answers NOT_FOUND (its adapter list may be newer than ours); with none, the gateway answers that 404 itself.
 */
import { InlaidError } from '../common/inlaid-error';

export interface RoutableWorker {
  readonly addr: string;
  readonly ready: boolean;
  readonly inFlight: number;
  serves(model: string): boolean;
  /** Whether its adapter catch-up may still change `model` there (requests for it must not go there yet). */
  pendingFor(model: string): boolean;
  /** Whether that catch-up only unloads `model` there: no served task is behind the name (requests for it get a 404). */
  unloadingFor(model: string): boolean;
}

const leastBusy = <W extends RoutableWorker>(workers: readonly W[]): W => workers.reduce((best, w) => (w.inFlight < best.inFlight ? w : best));

/**
 * The worker for `model`, or null when the request should wait for a worker's catch-up; UNAVAILABLE when none is ready,
 * NOT_FOUND when every ready worker holds it only to unload it.
 */
export function routeRequest<W extends RoutableWorker>(workers: readonly W[], model: string): W | null {
  const ready = workers.filter((w) => w.ready);
  if (ready.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
  const settled = ready.filter((w) => !w.pendingFor(model));
  const serving = settled.filter((w) => w.serves(model));
  if (serving.length > 0) return leastBusy(serving);
  if (ready.some((w) => w.pendingFor(model) && !w.unloadingFor(model))) return null;
  if (settled.length > 0) return leastBusy(settled);
  throw InlaidError.modelNotFound(model);
}

