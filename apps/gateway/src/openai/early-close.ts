/** Watching an HTTP response for its client leaving before the response was sent. */
import type { Response } from 'express';

export interface EarlyClose {
  /** Aborted when the response closes unfinished (the client disconnected). */
  readonly signal: AbortSignal;
  /** Stops watching. */
  stop(): void;
}

/**
 * Watches `res`; `signal` is aborted at once when the client left before this ran (while its key was admitted: 'close'
 * has fired already).
 */
export function earlyClose(res: Response): EarlyClose {
  const left = new AbortController();
  const onClose = (): void => {
    if (!res.writableFinished) left.abort();
  };
  res.on('close', onClose);
  if (res.closed || res.destroyed) onClose();
  return { signal: left.signal, stop: () => res.off('close', onClose) };
}
