import { status } from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { afterWrite, DRAIN_TIMEOUT_MS } from './back-pressure';
import { InlaidError } from './inlaid-error';

describe('afterWrite', () => {
  it('resolves at once when the write was accepted, waits for drain otherwise and removes its listeners', async () => {
    const s = new EventEmitter();
    await afterWrite(true, s, ['close'], () => false);
    let settled = false;
    const wait = afterWrite(false, s, ['close'], () => false, { timeoutMs: 1000 }).then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    s.emit('drain');
    await wait;
    expect(settled).toBe(true);
    expect(s.listenerCount('drain') + s.listenerCount('close')).toBe(0);
  });

  it('ends a stream whose client reads nothing within the limit: onStall, RESOURCE_EXHAUSTED, listeners removed', async () => {
    expect(DRAIN_TIMEOUT_MS).toBe(60_000);
    const s = new EventEmitter();
    const onStall = jest.fn();
    const started = Date.now();
    const failure = await afterWrite(false, s, ['close', 'error'], () => false, { onStall, timeoutMs: 20 }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(15);
    expect(onStall).toHaveBeenCalledTimes(1);
    expect(failure).toBeInstanceOf(InlaidError);
    expect((failure as InlaidError).status).toBe(status.RESOURCE_EXHAUSTED);
    expect(s.listenerCount('drain') + s.listenerCount('close') + s.listenerCount('error')).toBe(0);
    s.emit('drain'); // a late drain changes nothing
    expect(onStall).toHaveBeenCalledTimes(1);
  });

  it('does not call onStall when the client drains in time', async () => {
    const s = new EventEmitter();
    const onStall = jest.fn();
    const wait = afterWrite(false, s, ['close'], () => false, { onStall, timeoutMs: 30 });
    s.emit('close');
    await wait;
    await new Promise((r) => setTimeout(r, 50));
    expect(onStall).not.toHaveBeenCalled();
  });
});
