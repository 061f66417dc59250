/**
 * Back-pressure for a response stream. A write() that returns false says the stream's buffer is past its high-water
 * mark: the client reads slower than the worker generates. Waiting here before pulling the next delta keeps the
 * gateway's memory per slow client at about one buffer, where writing on would queue the whole generation.
 */
import type { EventEmitter } from 'node:events';

/**
 * Resolves once `stream` can take more ('drain'), or when any of `gone` fires (the client left, the stream closed or
 * failed: no drain will come). At once when the write was accepted or `isGone()` already holds. `accepted` is
 * write()'s result; only an explicit false waits (a stand-in that returns nothing never does).
 */
export function afterWrite(accepted: boolean | void, stream: EventEmitter, gone: readonly string[], isGone: () => boolean): Promise<void> {
  if (accepted !== false || isGone()) return Promise.resolve();
  return new Promise((resolve) => {
    const events = ['drain', ...gone];
    const done = (): void => {
      for (const e of events) stream.off(e, done);
      resolve();
    };
    for (const e of events) stream.on(e, done);
  });
}
