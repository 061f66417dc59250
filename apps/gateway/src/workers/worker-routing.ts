/**
 * Picks the worker for a request (pure over connection views): among ready workers, prefer those that list
 * the model, then the fewest requests in flight. A model no worker lists still goes to a ready worker,
 * whose Prepare answers NOT_FOUND (its adapter list may be newer than ours).
 */
import { InlaidError } from '../common/inlaid-error';

export interface RoutableWorker {
  readonly addr: string;
  readonly ready: boolean;
  readonly inFlight: number;
  serves(model: string): boolean;
}

export function pickWorker<W extends RoutableWorker>(workers: readonly W[], model: string): W {
  const ready = workers.filter((w) => w.ready);
  if (ready.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
  const serving = ready.filter((w) => w.serves(model));
  const candidates = serving.length > 0 ? serving : ready;
  return candidates.reduce((best, w) => (w.inFlight < best.inFlight ? w : best));
}
