import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { pickWorker, RoutableWorker } from './worker-routing';

const w = (addr: string, ready: boolean, inFlight: number, models: string[]): RoutableWorker => ({
  addr, ready, inFlight, serves: (m) => models.includes(m),
});

describe('pickWorker', () => {
  it('fails fast with UNAVAILABLE when no worker is ready', () => {
    expect(() => pickWorker([w('a', false, 0, ['x'])], 'x')).toThrow(InlaidError);
    try {
      pickWorker([], 'x');
    } catch (err) {
      expect((err as InlaidError).status).toBe(status.UNAVAILABLE);
    }
  });

  it('prefers ready workers serving the model, then the least loaded', () => {
    const workers = [w('a', true, 0, ['base']), w('b', true, 5, ['sql']), w('c', true, 2, ['sql']), w('d', false, 0, ['sql'])];
    expect(pickWorker(workers, 'sql').addr).toBe('c');
    expect(pickWorker(workers, 'unknown').addr).toBe('a');
  });
});
