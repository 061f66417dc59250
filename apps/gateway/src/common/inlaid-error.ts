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
  /**
   * The kind a worker named for its refusal or failure of one request (worker.proto RequestErrorKind), on the errors
   * workerRequestError builds: what the dispatcher (a run refused while its worker shuts down is queued again) and
   * Prepare's retry act on. Never sent to the client.
   */
  readonly workerKind?: worker.RequestErrorKind;
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

const Kind = worker.RequestErrorKind;

/** What a client is told when the worker could not be reached (or the link broke): retry, maybe on another worker. */
export const WORKER_UNAVAILABLE_MESSAGE = 'The worker is unavailable; retry the request.';
/** What a client is told when a worker call ran past its deadline. */
export const WORKER_TIMEOUT_MESSAGE = 'The worker did not answer in time.';

/**
 * A worker call that failed in its transport, as grpc-js reports it (no worker kind): UNAVAILABLE or CANCELLED a 503,
 * DEADLINE_EXCEEDED a 504, each with a fixed message; grpc-js's own text (which names the worker's address, e.g.
 * `remote_addr=10.0.0.7:50051`) is logged, never sent. undefined for any other code.
 */
export function workerLinkError(code: number, text: string): InlaidError | undefined {
  if (code === status.UNAVAILABLE || code === status.CANCELLED) {
    errorLog.warn(`worker call failed (${status[code]}): ${text}`);
    return InlaidError.unavailable(WORKER_UNAVAILABLE_MESSAGE);
  }
  if (code === status.DEADLINE_EXCEEDED) {
    errorLog.warn(`worker call failed (${status[code]}): ${text}`);
    return new InlaidError(status.DEADLINE_EXCEEDED, WORKER_TIMEOUT_MESSAGE);
  }
  return undefined;
}

/**
 * Turns an error from a worker's inference call (Prepare, Tokenize, Detokenize; a Session RequestError goes through
 * workerRequestError, admin calls through tasks/worker-admin.service.ts toAdminError) into an InlaidError. A worker's
 * refusal names its kind (WORKER_ERROR_KIND_KEY) and is classified by the kind alone (workerRequestError). A failure
 * without one is either the link's (workerLinkError: a 503 or 504 with a fixed message) or, whatever its status code,
 * not a refusal the worker vouched for (an older worker, grpc-js's own RESOURCE_EXHAUSTED or INTERNAL, a handler that
 * raised: UNKNOWN): the worker's own failure, a logged 500, as a RequestError without a kind is. Workers are upgraded
 * before the gateway. Any other error (neither gRPC nor InlaidError) is a bug: it is logged here, once (its result is
 * an InlaidError, passed on as is), and the client gets INTERNAL_ERROR_MESSAGE.
 */
export function fromWorkerError(err: unknown, model: string): InlaidError {
  if (err instanceof InlaidError) return err;
  if (!isGrpcError(err)) {
    errorLog.error(err);
    return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
  }
  const message = err.details ?? err.message;
  const named = err.metadata?.get(WORKER_ERROR_KIND_KEY)[0];
  if (named !== undefined) {
    const kind = worker.requestErrorKindFromJSON(String(named));
    const text = message || (kind === Kind.REQUEST_ERROR_KIND_UNKNOWN_MODEL ? `The model \`${model}\` does not exist.` : '');
    return workerRequestError({ kind, message: text });
  }
  return workerLinkError(err.code, message) ?? workerBug(`(no error kind, status ${status[err.code] ?? err.code}: an older worker?) ${message}`);
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
export function workerBug(message: string): InlaidError {
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
  const known = KIND_ERRORS[error.kind] !== undefined;
  const err = (known ? KIND_ERRORS[error.kind] : KIND_ERRORS[Kind.UNRECOGNIZED])(error.message);
  const workerKind = known ? error.kind : Kind.UNRECOGNIZED;
  return new InlaidError(err.status, err.message, { ...err.details, workerKind });
}

/**
 * A worker's refusal of a run the gateway admitted again (a preempted or requeued request, resumed by
 * scheduling/resume.ts): the client's request was accepted as it is once already, so a BAD_INPUT now is the gateway's
 * or the worker's fault (e.g. a resumed grammar replay the worker refuses), never the client's: a logged 500 instead
 * of a 400 (other kinds are kept). Applied by the dispatcher, the one place that knows a run is not the first.
 */
export function rerunRefusal(err: Error): Error {
  if (!(err instanceof InlaidError) || err.details.workerKind !== Kind.REQUEST_ERROR_KIND_BAD_INPUT) return err;
  return workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_INTERNAL, message: `(a re-admitted run refused as bad input) ${err.message}` });
}
