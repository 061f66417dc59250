/**
 * The gateway's one error type. It carries a canonical gRPC status code, the shared vocabulary of the
 * worker link, the client gRPC API and (through http-mapping.ts) the OpenAI HTTP API.
 */
import { status } from '@grpc/grpc-js';
import { Logger } from '@nestjs/common';
import { worker } from '@inlaid/proto';

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
  metadata?: { get(key: string): unknown[] };
}

function isGrpcError(err: unknown): err is GrpcLikeError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number';
}

/** What a client is told of an unexpected failure (a bug): its own text, e.g. a TypeError's, stays in the log. */
export const INTERNAL_ERROR_MESSAGE = 'The server had an error while processing your request.';

const errorLog = new Logger('Errors');

/**
 * The trailing metadata key in which a worker names the kind of a refused Prepare, Tokenize or Detokenize (the name
 * of a worker.proto RequestErrorKind value, e.g. `REQUEST_ERROR_KIND_BAD_INPUT`).
 */
export const WORKER_ERROR_KIND_KEY = 'inlaid-error-kind';

/**
 * Turns an error from a worker call into an InlaidError. A worker's refusal that names its kind (WORKER_ERROR_KIND_KEY)
 * is classified by the kind alone (workerRequestError). Without one (admin calls, an older worker) the status code
 * decides: NOT_FOUND from the worker means an unknown model (the only thing Prepare looks up), INVALID_ARGUMENT bad
 * input, and transport failures become UNAVAILABLE so clients see 503. Any other error (neither gRPC nor InlaidError)
 * is a bug: it is logged here, once (its result is an InlaidError, passed on as is), and the client gets
 * INTERNAL_ERROR_MESSAGE.
 */
export function fromWorkerError(err: unknown, model: string): InlaidError {
  if (err instanceof InlaidError) return err;
  if (!isGrpcError(err)) {
    errorLog.error(err);
    return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
  }
  const message = err.details ?? err.message;
  const named = err.metadata?.get(WORKER_ERROR_KIND_KEY)[0];
  if (named !== undefined) return workerRequestError({ kind: worker.requestErrorKindFromJSON(String(named)), message });
  switch (err.code) {
    case status.NOT_FOUND:
      return unknownModel(message || `The model \`${model}\` does not exist.`);
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return badInput(message);
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

/** A request's own fault: HTTP 400 invalid_request_error with the worker's text, naming the parameter it starts with. */
function badInput(message: string): InlaidError {
  return new InlaidError(status.INVALID_ARGUMENT, message, { code: 'invalid_request', param: workerParam(message) });
}

/** The worker does not serve the model (the only thing Prepare looks up): 404 model_not_found with its text. */
function unknownModel(message: string): InlaidError {
  return new InlaidError(status.NOT_FOUND, message, { param: 'model', code: 'model_not_found' });
}

/** The worker's own failure or bug: a 500 with INTERNAL_ERROR_MESSAGE, its text logged (once, here). */
function workerBug(message: string): InlaidError {
  errorLog.error(`worker: ${message}`);
  return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
}

/**
 * Request parameters a worker's refusal may start with (`response_format: invalid regex: …`); the gRPC API names them
 * as `sampling.<name>` (grpc-api/inference-handlers.ts). Only the error's `param` comes from the text, never its status.
 */
export const WORKER_PARAMS = ['response_format', 'logit_bias', 'prompt_logprobs'] as const;

/** The parameter a worker's refusal names at its start, if it is one the gateway forwards as such. */
function workerParam(message: string): string | undefined {
  return WORKER_PARAMS.find((p) => message.startsWith(`${p}:`));
}

const Kind = worker.RequestErrorKind;

/**
 * What the client is told of each kind of worker refusal (worker.proto RequestErrorKind, named by the worker where the
 * error is raised), the one table of it: bad input a 400 with the worker's text; an unknown model (an adapter unloaded
 * since Prepare) a 404; a shutdown or a backlog (a resumed request's replay queued too long) a 503 to retry; the
 * worker's (or the gateway's) own failure a 500 with INTERNAL_ERROR_MESSAGE, its text logged once. No kind (an older
 * worker) or one this gateway does not know is treated as the worker's failure, the log saying so.
 */
const KIND_ERRORS: Readonly<Record<worker.RequestErrorKind, (message: string) => InlaidError>> = {
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT]: badInput,
  [Kind.REQUEST_ERROR_KIND_UNKNOWN_MODEL]: unknownModel,
  [Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN]: () => InlaidError.unavailable('The worker is shutting down; retry the request.'),
  [Kind.REQUEST_ERROR_KIND_OVERLOADED]: () => InlaidError.unavailable('The worker is busy; retry the request.'),
  [Kind.REQUEST_ERROR_KIND_INTERNAL]: workerBug,
  [Kind.REQUEST_ERROR_KIND_UNSPECIFIED]: (message) => workerBug(`(no error kind: an older worker?) ${message}`),
  [Kind.UNRECOGNIZED]: (message) => workerBug(`(an error kind this gateway does not know) ${message}`),
};

/**
 * Classifies a worker's refusal of one request by its kind alone, never its text: a RequestError event on the Session
 * (the worker refusing or failing an admitted request), or a unary call's refusal (fromWorkerError).
 */
export function workerRequestError(error: Pick<worker.RequestError, 'kind' | 'message'>): InlaidError {
  return (KIND_ERRORS[error.kind] ?? KIND_ERRORS[Kind.UNRECOGNIZED])(error.message);
}
