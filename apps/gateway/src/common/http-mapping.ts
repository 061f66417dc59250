/** Maps canonical gRPC status codes to HTTP statuses and OpenAI error `type`s (pure). */
import { status } from '@grpc/grpc-js';
import { InlaidError } from './inlaid-error';

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const HTTP_STATUS: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.FAILED_PRECONDITION]: 400,
  [status.OUT_OF_RANGE]: 400,
  [status.UNAUTHENTICATED]: 401,
  [status.PERMISSION_DENIED]: 403,
  [status.NOT_FOUND]: 404,
  [status.ALREADY_EXISTS]: 409,
  [status.ABORTED]: 409,
  [status.RESOURCE_EXHAUSTED]: 429,
  [status.CANCELLED]: 499,
  [status.UNIMPLEMENTED]: 501,
  [status.UNAVAILABLE]: 503,
  [status.DEADLINE_EXCEEDED]: 504,
};

export function httpStatusOf(code: status): number {
  return HTTP_STATUS[code] ?? 500;
}

/** OpenAI's error `type` for an HTTP status. */
export function openAIErrorType(httpStatus: number): string {
  if (httpStatus === 401) return 'authentication_error';
  if (httpStatus === 403) return 'permission_error';
  if (httpStatus === 404) return 'invalid_request_error';
  if (httpStatus === 429) return 'rate_limit_error';
  if (httpStatus >= 400 && httpStatus < 500) return 'invalid_request_error';
  if (httpStatus === 503) return 'service_unavailable_error';
  return 'server_error';
}

export function toOpenAIError(err: InlaidError): { httpStatus: number; body: OpenAIErrorBody } {
  const httpStatus = err.details.httpStatus ?? httpStatusOf(err.status);
  return {
    httpStatus,
    body: {
      error: {
        message: err.message,
        type: openAIErrorType(httpStatus),
        param: err.details.param ?? null,
        code: err.details.code ?? null,
      },
    },
  };
}

/** Inverse direction, for HTTP errors raised by the framework (bad JSON, unknown route). */
export function grpcStatusOfHttp(httpStatus: number): status {
  if (httpStatus === 400 || httpStatus === 413 || httpStatus === 415) return status.INVALID_ARGUMENT;
  if (httpStatus === 401) return status.UNAUTHENTICATED;
  if (httpStatus === 403) return status.PERMISSION_DENIED;
  if (httpStatus === 404 || httpStatus === 405) return status.NOT_FOUND;
  if (httpStatus === 429) return status.RESOURCE_EXHAUSTED;
  if (httpStatus === 503) return status.UNAVAILABLE;
  if (httpStatus === 504) return status.DEADLINE_EXCEEDED;
  return status.INTERNAL;
}
