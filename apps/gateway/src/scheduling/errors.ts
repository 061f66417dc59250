/**
 * Client-facing errors for the Scheduler's abort decisions (pure):
 * - exceeds-kv: the request's context can never fit one worker's KV cache -> INVALID_ARGUMENT (HTTP 400,
 *   code `context_length_exceeded`, param `prompt`); retrying cannot help.
 * - hopeless: with INLAID_ABORT_HOPELESS, a queued request whose TTFT SLO has already passed -> UNAVAILABLE
 *   (HTTP 503, code `slo_unattainable`, Retry-After 1 s): the gateway is overloaded, a later retry may succeed.
 */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import type { Ticket } from './ticket';

export function abortError(reason: 'hopeless' | 'exceeds-kv', t: Ticket): InlaidError {
  const tokens = t.req.promptTokenIds.length + t.generated.length;
  if (reason === 'exceeds-kv') {
    return new InlaidError(status.INVALID_ARGUMENT, `The request's context (${tokens} tokens) needs more KV cache than any worker has.`, {
      param: 'prompt',
      code: 'context_length_exceeded',
    });
  }
  return new InlaidError(status.UNAVAILABLE, `The gateway is overloaded: the request (task ${t.task}) waited past its time-to-first-token SLO and was not started.`, {
    code: 'slo_unattainable',
    retryAfterS: 1,
  });
}
