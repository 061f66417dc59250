/**
 * Back-pressure for a response stream. A write() that returns false says the stream's buffer is past its high-water
 * mark: the client reads slower than the worker generates. Waiting here before pulling the next delta keeps the
 * gateway's memory per slow client at about one buffer, where writing on would queue the whole generation. The wait
 * is bounded: a connected client that never reads would otherwise park its handler, and its key's concurrency
 * slots, for as long as it keeps the connection open.
 */
import { status } from '@grpc/grpc-js';
import type { EventEmitter } from 'node:events';
import { InlaidError } from './inlaid-error';

/** How long a stream may wait for its client to read ('drain') before it is ended. */
export const DRAIN_TIMEOUT_MS = 60_000;

interface StallOptions {
  /** Ends the stream for good (SSE: res.destroy()); called once, before the wait rejects. */
  readonly onStall?: () => void;
  /** The limit on one wait (tests inject a short one). */
  readonly timeoutMs?: number;
}

/** The error a wait rejects with when the client read nothing within the limit. */
function stalledError(timeoutMs: number): InlaidError {
  return new InlaidError(status.RESOURCE_EXHAUSTED, `The client did not read its stream for ${Math.round(timeoutMs / 1000)} s, so the request was stopped.`);
}

/**
 * Resolves once `stream` can take more ('drain'), or when any of `gone` fires (the client left, the stream closed or
 * failed: no drain will come). At once when the write was accepted or `isGone()` already holds. `accepted` is
 * write()'s result; only an explicit false waits (a stand-in that returns nothing never does). After `timeoutMs`
 * without either it calls `onStall` and rejects with RESOURCE_EXHAUSTED (stalledError), so the caller's error path
 * ends the response and releases what the request holds.
 */
export function afterWrite(
  accepted: boolean | void,
  stream: EventEmitter,
  gone: readonly string[],
  isGone: () => boolean,
  { onStall, timeoutMs = DRAIN_TIMEOUT_MS }: StallOptions = {},
): Promise<void> {
  if (accepted !== false || isGone()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const events = ['drain', ...gone];
    const cleanup = (): void => {
      clearTimeout(timer);
      for (const e of events) stream.off(e, done);
    };
    const done = (): void => {
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      onStall?.();
      reject(stalledError(timeoutMs));
    }, timeoutMs);
    for (const e of events) stream.on(e, done);
  });
}
