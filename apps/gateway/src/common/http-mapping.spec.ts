import { status } from '@grpc/grpc-js';
import { grpcStatusOfHttp, httpStatusOf, toOpenAIError } from './http-mapping';
import { workerRefusal } from '../testing/worker-refusal';
import { fromWorkerError, InlaidError } from './inlaid-error';

describe('gRPC status -> HTTP', () => {
  it.each([
    [status.INVALID_ARGUMENT, 400],
    [status.UNAUTHENTICATED, 401],
    [status.NOT_FOUND, 404],
    [status.RESOURCE_EXHAUSTED, 429],
    [status.UNAVAILABLE, 503],
    [status.DEADLINE_EXCEEDED, 504],
    [status.INTERNAL, 500],
    [status.UNKNOWN, 500],
  ])('maps %s to %s', (code, http) => {
    expect(httpStatusOf(code)).toBe(http);
  });

  it('round-trips the common HTTP statuses', () => {
    for (const http of [400, 401, 404, 429, 503, 504]) expect(httpStatusOf(grpcStatusOfHttp(http))).toBe(http);
  });
});

describe('toOpenAIError', () => {
  it('builds the OpenAI error object for an unknown model', () => {
    expect(toOpenAIError(InlaidError.modelNotFound('nope'))).toEqual({
      httpStatus: 404,
      body: {
        error: {
          message: 'The model `nope` does not exist.',
          type: 'invalid_request_error',
          param: 'model',
          code: 'model_not_found',
        },
      },
    });
  });

  it('names the parameter of a validation error', () => {
    const { httpStatus, body } = toOpenAIError(InlaidError.invalid('bad', 'top_p'));
    expect(httpStatus).toBe(400);
    expect(body.error.param).toBe('top_p');
    expect(body.error.type).toBe('invalid_request_error');
  });
});

describe('fromWorkerError', () => {
  const grpcErr = (code: status, details: string) =>
    workerRefusal(code, details, code === status.NOT_FOUND ? 'REQUEST_ERROR_KIND_UNKNOWN_MODEL' : 'REQUEST_ERROR_KIND_BAD_INPUT');

  it('keeps the worker message of INVALID_ARGUMENT (e.g. a too-long prompt)', () => {
    const err = fromWorkerError(grpcErr(status.INVALID_ARGUMENT, 'prompt has 900 tokens, limit is 512'), 'm');
    expect(err.status).toBe(status.INVALID_ARGUMENT);
    expect(err.message).toBe('prompt has 900 tokens, limit is 512');
    expect(err.details.param).toBeUndefined();
  });

  it('names response_format when the worker refuses a grammar', () => {
    const err = fromWorkerError(grpcErr(status.INVALID_ARGUMENT, 'response_format: invalid regex: unbalanced ('), 'm');
    expect(err.details.param).toBe('response_format');
    expect(toOpenAIError(err).body.error.param).toBe('response_format');
  });

  it('maps NOT_FOUND to model_not_found and transport errors to UNAVAILABLE', () => {
    expect(fromWorkerError(grpcErr(status.NOT_FOUND, 'unknown model x'), 'x').details.code).toBe('model_not_found');
    expect(fromWorkerError(workerRefusal(status.UNAVAILABLE, 'connect failed'), 'x').status).toBe(status.UNAVAILABLE);
    expect(fromWorkerError(new Error('boom'), 'x').status).toBe(status.INTERNAL);
  });
});
