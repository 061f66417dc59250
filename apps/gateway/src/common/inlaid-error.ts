/**
 * The gateway's one error type. It carries a canonical gRPC status code, the shared vocabulary of the
 * worker link, the client gRPC API and (through http-mapping.ts) the OpenAI HTTP API.
 */
import { status } from '@grpc/grpc-js';
import { Logger } from '@nestjs/common';

export interface InlaidErrorDetails {
  /** The request parameter at fault, when there is one. */
  readonly param?: string;
  /** OpenAI-style machine code, e.g. `model_not_found`. */
  readonly code?: string;
  /** Seconds after which a retry may succeed (HTTP Retry-After, gRPC `retry-after` metadata). */
  readonly retryAfterS?: number;
  /** An HTTP status finer than the gRPC code's mapping (413 for an oversized body). */
  readonly httpStatus?: number;
}

export class InlaidError extends Error {
  constructor(
    readonly status: status,
    message: string,
    readonly details: InlaidErrorDetails = {},
  ) {
    super(message);
    this.name = 'InlaidError';
  }

  static invalid(message: string, param?: string): InlaidError {
    return new InlaidError(status.INVALID_ARGUMENT, message, { param, code: param === undefined ? undefined : 'invalid_value' });
  }

  static modelNotFound(model: string): InlaidError {
    return new InlaidError(status.NOT_FOUND, `The model \`${model}\` does not exist.`, {
      param: 'model',
      code: 'model_not_found',
    });
  }

  static unavailable(message: string): InlaidError {
    return new InlaidError(status.UNAVAILABLE, message, { code: 'service_unavailable' });
  }

  static unauthenticated(message: string): InlaidError {
    return new InlaidError(status.UNAUTHENTICATED, message, { code: 'invalid_api_key' });
  }

  static permissionDenied(message: string): InlaidError {
    return new InlaidError(status.PERMISSION_DENIED, message, { code: 'insufficient_scope' });
  }

  static rateLimited(message: string, retryAfterS: number, code = 'rate_limit_exceeded'): InlaidError {
    return new InlaidError(status.RESOURCE_EXHAUSTED, message, { code, retryAfterS: Math.max(1, Math.ceil(retryAfterS)) });
  }
}

/** Shape of errors thrown by @grpc/grpc-js calls (ServiceError) that we rely on. */
interface GrpcLikeError {
  code: number;
  details?: string;
  message: string;
}

function isGrpcError(err: unknown): err is GrpcLikeError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number';
}

/** What a client is told of an unexpected failure (a bug): its own text, e.g. a TypeError's, stays in the log. */
export const INTERNAL_ERROR_MESSAGE = 'The server had an error while processing your request.';

const errorLog = new Logger('Errors');

/**
 * Turns an error from a worker call into an InlaidError. NOT_FOUND from the worker means an unknown model
 * (the only thing Prepare looks up); transport failures become UNAVAILABLE so clients see 503. Any other error
 * (neither gRPC nor InlaidError) is a bug: it is logged here, once (its result is an InlaidError, passed on as is),
 * and the client gets INTERNAL_ERROR_MESSAGE.
 */
export function fromWorkerError(err: unknown, model: string): InlaidError {
  if (err instanceof InlaidError) return err;
  if (!isGrpcError(err)) {
    errorLog.error(err);
    return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
  }
  const message = err.details ?? err.message;
  switch (err.code) {
    case status.NOT_FOUND:
      return new InlaidError(status.NOT_FOUND, message || `The model \`${model}\` does not exist.`, {
        param: 'model',
        code: 'model_not_found',
      });
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return workerRefusal(message);
    case status.CANCELLED:
    case status.UNAVAILABLE:
      return InlaidError.unavailable(`Worker unavailable: ${message}`);
    case status.UNKNOWN:
      // a handler that raised ("Exception calling application: ..."): the worker's bug, its text naming internals
      return workerBug(message);
    default:
      return new InlaidError(err.code as status, message);
  }
}

/**
 * A worker refusing a request as bad input: its INVALID_ARGUMENT at Prepare (a status it sends only for the request's
 * own fault). HTTP 400 invalid_request_error, naming the parameter the message starts with. A RequestError event at
 * Admit is not always bad input: it goes through workerRequestError.
 */
export function workerRefusal(message: string): InlaidError {
  return workerFault(message) ?? badInput(message);
}

function badInput(message: string): InlaidError {
  return new InlaidError(status.INVALID_ARGUMENT, message, { code: 'invalid_request', param: workerParam(message) });
}

/** The worker's own failure or bug: a 500 with INTERNAL_ERROR_MESSAGE, its text logged (once, here). */
function workerBug(message: string): InlaidError {
  errorLog.error(`worker: ${message}`);
  return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
}

/**
 * The worker's own response_format failures, which start as the client's refusals do (sent at Prepare as
 * INVALID_ARGUMENT or at Admit as a RequestError): GRAMMAR_REPLAY_BUSY a 503, WORKER_GRAMMAR_FAULT a logged 500.
 */
function workerFault(message: string): InlaidError | undefined {
  if (GRAMMAR_REPLAY_BUSY.test(message)) return InlaidError.unavailable('The worker is busy resuming other structured-output requests; retry the request.');
  if (WORKER_GRAMMAR_FAULT.test(message)) return workerBug(message);
  return undefined;
}

/**
 * Request parameters a worker's refusal may start with (`response_format: invalid regex: …`); the gRPC API names them
 * as `sampling.<name>` (grpc-api/inference-handlers.ts).
 */
export const WORKER_PARAMS = ['response_format', 'logit_bias', 'prompt_logprobs'] as const;

/** The parameter a worker's refusal names at its start, if it is one the gateway forwards as such. */
function workerParam(message: string): string | undefined {
  return WORKER_PARAMS.find((p) => message.startsWith(`${p}:`));
}

/**
 * The worker's Admit refusals that are the request's own fault besides those naming a parameter at their start
 * (engine.py check_prompt; SamplingParams.validate through convert.py sampling_from_proto): each a 400. The gateway
 * checks most of these first, so a client rarely meets the worker's text.
 */
const BAD_INPUT: readonly RegExp[] = [
  /^the prompt is empty$/,
  /^the prompt has \d+ tokens; this model's maximum context length is \d+ tokens/,
  /^prompt token id -?\d+ is outside the vocabulary/,
  /^stop strings must not be empty$/,
  /^at most \d+ stop strings/,
  /^stop_token_ids must be non-negative$/,
  /^(max_tokens|temperature|top_p|seed|presence_penalty|frequency_penalty|repetition_penalty|logprobs|prompt_logprobs|min_p|min_tokens) must be /,
];

/**
 * How the worker's ClosedError texts end or start (engine/grammar_cache.py; engine/compile_pool.py's own "compile pool
 * <name> is closed"): it is shutting down, retry elsewhere.
 */
const SHUTDOWN = /the worker is shutting down|^the grammar cache (is )?closed|^compile pool \S+ is closed/;

/**
 * response_format texts that are the worker's own failures, not the client's schema (engine/grammar_cache.py: no
 * thread could start a compile or a replay, xgrammar failing to replay output it accepted before): a logged 500.
 */
const WORKER_GRAMMAR_FAULT = /^response_format: (the compile could not start|the resumed output's replay could not start|replaying the resumed output failed): /;

/** A resumed request's replay that waited behind other requests' replays past its bound (grammar_cache.py): load, 503. */
const GRAMMAR_REPLAY_BUSY = /^response_format: replaying the resumed output .* took longer than .* \(it waited for other requests' replays\)$/s;

/** UnknownModelError's text (engine/adapters.py): an adapter unloaded between Prepare and Admit. */
const UNKNOWN_MODEL = /^the model (['"])(.*)\1 does not exist$/s;

/**
 * Classifies a RequestError event, the worker refusing or failing one request on its Session (no status code comes
 * with it: an interim reading of its text until the proto carries one). The worker's own response_format failures
 * (WORKER_GRAMMAR_FAULT: 500; GRAMMAR_REPLAY_BUSY: 503) are told apart first. Bad input (a known parameter's prefix, or one
 * of the prompt/sampling checks in BAD_INPUT) is a 400; a shutdown is UNAVAILABLE (503, retryable); an unknown model
 * is 404 model_not_found; anything else (a crashed step, the catch-all "request refused: ...", a request id clash, a
 * grammar-state mismatch: the gateway's or worker's fault) is a 500 with INTERNAL_ERROR_MESSAGE, its text logged once.
 */
export function workerRequestError(message: string): InlaidError {
  const fault = workerFault(message); // the worker's own response_format failures first
  if (fault !== undefined) return fault;
  if (workerParam(message) !== undefined || BAD_INPUT.some((p) => p.test(message))) return badInput(message);
  if (SHUTDOWN.test(message)) return InlaidError.unavailable('The worker is shutting down; retry the request.');
  const model = UNKNOWN_MODEL.exec(message);
  if (model !== null) return InlaidError.modelNotFound(model[2]);
  return workerBug(message);
}
