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
    default:
      return new InlaidError(err.code as status, message);
  }
}

/**
 * A worker refusing a request as bad input: its INVALID_ARGUMENT at Prepare, or a RequestError event at Admit (e.g.
 * prompt_logprobs too large for the prompt). HTTP 400 invalid_request_error, naming the parameter the message starts with.
 */
export function workerRefusal(message: string): InlaidError {
  if (message.startsWith(WORKER_BUG_PREFIX)) {
    // the worker's catch-all for an error no check foresaw (servicer.py's admit): a bug of its own, logged there
    errorLog.error(`worker: ${message}`);
    return new InlaidError(status.INTERNAL, INTERNAL_ERROR_MESSAGE);
  }
  return new InlaidError(status.INVALID_ARGUMENT, message, { code: 'invalid_request', param: workerParam(message) });
}

/** How the worker's Admit catch-all starts its RequestError (workers/inlaid_worker/server/servicer.py). */
const WORKER_BUG_PREFIX = 'request refused: ';

/** Request parameters a worker's INVALID_ARGUMENT message may start with (`response_format: invalid regex: …`). */
const WORKER_PARAMS = ['response_format', 'logit_bias', 'prompt_logprobs'] as const;

/** The parameter a worker's refusal names at its start, if it is one the gateway forwards as such. */
function workerParam(message: string): string | undefined {
  return WORKER_PARAMS.find((p) => message.startsWith(`${p}:`));
}
