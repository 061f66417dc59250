import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { routeRequest, RoutableWorker } from './worker-routing';

/** `pending`: held by its catch-up; `unloading`: of those, held only to be unloaded there (no served task behind the name). */
const w = (addr: string, ready: boolean, inFlight: number, models: string[], pending: string[] = [], unloading: string[] = []): RoutableWorker => ({
  addr, ready, inFlight, serves: (m) => models.includes(m), pendingFor: (m) => pending.includes(m), unloadingFor: (m) => pending.includes(m) && unloading.includes(m),
});

describe('routeRequest', () => {
  it('fails fast with UNAVAILABLE when no worker is ready', () => {
    expect(() => routeRequest([w('a', false, 0, ['x'])], 'x')).toThrow(InlaidError);
    try {
      routeRequest([], 'x');
    } catch (err) {
      expect((err as InlaidError).status).toBe(status.UNAVAILABLE);
    }
  });

  it('prefers ready workers serving the model, then the least loaded', () => {
    const workers = [w('a', true, 0, ['base']), w('b', true, 5, ['sql']), w('c', true, 2, ['sql']), w('d', false, 0, ['sql'])];
    expect(routeRequest(workers, 'sql')?.addr).toBe('c');
    expect(routeRequest(workers, 'unknown')?.addr).toBe('a');
  });

  it('never routes a model to a worker still catching up on it: another that serves it, else wait (null)', () => {
    // b restarted: its catch-up has not loaded sql yet (before: sql went to the least loaded ready worker, b, a 404)
    const restarted = w('b', true, 0, ['base'], ['sql']);
    expect(routeRequest([w('a', true, 9, ['base', 'sql']), restarted], 'sql')?.addr).toBe('a');
    expect(routeRequest([w('a', true, 0, ['base']), restarted], 'sql')).toBeNull();
    expect(routeRequest([restarted], 'sql')).toBeNull();
    // b lists sql from an older job (to replace): not routed there either
    const stale = w('b', true, 0, ['base', 'sql'], ['sql']);
    expect(routeRequest([w('a', true, 9, ['base', 'sql']), stale], 'sql')?.addr).toBe('a');
    expect(routeRequest([stale], 'sql')).toBeNull();
    // other models are not held
    expect(routeRequest([stale], 'base')?.addr).toBe('b');
    expect(routeRequest([w('a', true, 0, ['base']), w('c', true, 0, ['base'])], 'typo')?.addr).toBe('a'); // nobody catches up: its 404
  });

  it('a model held only to be unloaded (no served task behind it) is no wait: a worker not holding it (its 404), else a 404 at once', () => {
    // b drains a deleted task's adapter: before, the request waited for the drain (30 s) and got a 503
    const draining = w('b', true, 0, ['base', 'sql'], ['sql'], ['sql']);
    expect(routeRequest([w('a', true, 9, ['base']), draining], 'sql')?.addr).toBe('a'); // a's Prepare answers 404
    expect(routeRequest([w('a', true, 9, ['base', 'sql']), draining], 'sql')?.addr).toBe('a'); // a newer job's adapter there
    let err: unknown = null;
    try {
      routeRequest([draining], 'sql'); // never b, which still runs the old adapter
    } catch (e) {
      err = e;
    }
    expect([(err as InlaidError).status, (err as InlaidError).details.code]).toEqual([status.NOT_FOUND, 'model_not_found']);
    // another worker still loading it (a task served everywhere): the request waits for that one
    expect(routeRequest([w('a', true, 0, ['base'], ['sql']), draining], 'sql')).toBeNull();
    expect(routeRequest([draining], 'base')?.addr).toBe('b');
  });
});
