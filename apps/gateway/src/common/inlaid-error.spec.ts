/**
 * fromWorkerError never passes an unexpected error's own text (a TypeError's, naming internals) to the client: it
 * becomes INTERNAL_ERROR_MESSAGE and is logged, once; gRPC status errors and InlaidErrors keep their messages.
 * A worker's refusal is classified by the kind it names (a RequestError's kind at Admit, the `inlaid-error-kind` trailing
 * metadata of a unary call), never by its text; a unary refusal without one (an admin call, an older worker) by its
 * status code; a RequestError without one is a logged 500.
 */
import { Metadata, status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { Logger } from '@nestjs/common';
import { toOpenAIError } from './http-mapping';
import { fromWorkerError, INTERNAL_ERROR_MESSAGE, InlaidError, WORKER_ERROR_KIND_KEY, workerRequestError } from './inlaid-error';

const Kind = worker.RequestErrorKind;
const grpcError = (code: status, details: string, kind?: string) => {
  const metadata = new Metadata();
  if (kind !== undefined) metadata.set(WORKER_ERROR_KIND_KEY, kind);
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata });
};

describe('fromWorkerError with an unexpected error', () => {
  let logged: jest.SpyInstance;
  beforeEach(() => (logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined)));
  afterEach(() => logged.mockRestore());

  it('hides its text from the client and logs it once', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'secret')");
    const err = fromWorkerError(bug, 'm');
    expect(err.status).toBe(status.INTERNAL);
    expect(err.message).toBe(INTERNAL_ERROR_MESSAGE); // before: the TypeError's message
    expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret');
    expect(logged).toHaveBeenCalledTimes(1);
    expect(logged.mock.calls[0][0]).toBe(bug);
    // its result passed on again (a later catch) is kept as is, and not logged again
    expect(fromWorkerError(err, 'm')).toBe(err);
    expect(logged).toHaveBeenCalledTimes(1);
  });

  it('keeps the messages of gRPC status errors and InlaidErrors, logging neither', () => {
    expect(fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'prompt has 900 tokens'), 'm').message).toBe('prompt has 900 tokens');
    expect(fromWorkerError(grpcError(status.INTERNAL, 'engine step failed'), 'm').message).toBe('engine step failed');
    const own = InlaidError.unavailable('Worker w1 disconnected.');
    expect(fromWorkerError(own, 'm')).toBe(own);
    expect(logged).not.toHaveBeenCalled();
  });
});

describe("fromWorkerError of a worker's unary refusal naming its kind", () => {
  let logged: jest.SpyInstance;
  beforeEach(() => (logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined)));
  afterEach(() => logged.mockRestore());

  it('is classified by the kind, whatever the status code and text', () => {
    const bad = fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'logit_bias: token id 99999 is outside the vocabulary', 'REQUEST_ERROR_KIND_BAD_INPUT'), 'm');
    expect(toOpenAIError(bad)).toMatchObject({ httpStatus: 400, body: { error: { type: 'invalid_request_error', param: 'logit_bias' } } });
    // a worker fault at Prepare that starts as a client refusal would: once told apart by a regex on its text
    const fault = fromWorkerError(grpcError(status.INTERNAL, 'response_format: the compile could not start: secret', 'REQUEST_ERROR_KIND_INTERNAL'), 'm');
    expect(toOpenAIError(fault)).toMatchObject({ httpStatus: 500, body: { error: { message: INTERNAL_ERROR_MESSAGE } } });
    const closing = fromWorkerError(grpcError(status.UNAVAILABLE, 'the grammar cache is closed', 'REQUEST_ERROR_KIND_SHUTTING_DOWN'), 'm');
    expect(closing.status).toBe(status.UNAVAILABLE);
    expect(closing.message).toMatch(/shutting down/);
    const gone = fromWorkerError(grpcError(status.NOT_FOUND, "the model 'a' does not exist", 'REQUEST_ERROR_KIND_UNKNOWN_MODEL'), 'a');
    expect(gone.details).toMatchObject({ code: 'model_not_found', param: 'model' });
    expect(logged).toHaveBeenCalledTimes(1);
    expect(String(logged.mock.calls[0][0])).toContain('could not start');
  });

  it('is a logged 500 for a kind this gateway does not know', () => {
    const err = fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'the prompt is empty', 'REQUEST_ERROR_KIND_SOMETHING_NEW'), 'm');
    expect(err.status).toBe(status.INTERNAL);
    expect(logged).toHaveBeenCalledTimes(1);
  });

  it('without a kind (an admin call, an older worker) goes by the status code, naming the parameter', () => {
    const err = fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'prompt_logprobs: 20 on a 90000-token prompt is too many entries'), 'm');
    expect(err.status).toBe(status.INVALID_ARGUMENT);
    expect(err.details.param).toBe('prompt_logprobs');
    expect(fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'the prompt is too long'), 'm').details.param).toBeUndefined();
    expect(logged).not.toHaveBeenCalled();
  });
});

describe('workerRequestError (a RequestError event)', () => {
  it('maps each kind to one status, never reading the text', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const text = 'the prompt is empty';
      const statusOf = (kind: worker.RequestErrorKind) => workerRequestError({ kind, message: text }).status;
      expect(statusOf(Kind.REQUEST_ERROR_KIND_BAD_INPUT)).toBe(status.INVALID_ARGUMENT);
      expect(statusOf(Kind.REQUEST_ERROR_KIND_UNKNOWN_MODEL)).toBe(status.NOT_FOUND);
      expect(statusOf(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN)).toBe(status.UNAVAILABLE);
      expect(statusOf(Kind.REQUEST_ERROR_KIND_OVERLOADED)).toBe(status.UNAVAILABLE);
      expect(statusOf(Kind.REQUEST_ERROR_KIND_INTERNAL)).toBe(status.INTERNAL);
      expect(statusOf(Kind.REQUEST_ERROR_KIND_UNSPECIFIED)).toBe(status.INTERNAL); // an older worker: no kind
      expect(statusOf(Kind.UNRECOGNIZED)).toBe(status.INTERNAL);
      expect(statusOf(99 as worker.RequestErrorKind)).toBe(status.INTERNAL); // a newer worker's kind
      expect(logged).toHaveBeenCalledTimes(4);
      expect(String(logged.mock.calls[1][0])).toMatch(/no error kind/);
    } finally {
      logged.mockRestore();
    }
  });
});

describe("the worker's own failures (a bug or a fault of its own, not bad input)", () => {
  it('is a 500 with the generic message, its text logged, not sent', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const err = workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_INTERNAL, message: "request refused: KeyError: 'secret_slot'" }); // its Admit catch-all
      expect(err.status).toBe(status.INTERNAL);
      expect(err.message).toBe(INTERNAL_ERROR_MESSAGE);
      expect(toOpenAIError(err)).toMatchObject({ httpStatus: 500, body: { error: { type: 'server_error' } } });
      expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret_slot');
      expect(logged).toHaveBeenCalledTimes(1);
    } finally {
      logged.mockRestore();
    }
  });
});

describe("fromWorkerError of a worker's UNKNOWN (a handler that raised)", () => {
  it('is a 500 with the generic message, its text logged once, not sent', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const err = fromWorkerError(grpcError(status.UNKNOWN, "Exception calling application: 'secret_key'"), 'm');
      expect(err.status).toBe(status.INTERNAL); // before: UNKNOWN, the worker's text passed on
      expect(err.message).toBe(INTERNAL_ERROR_MESSAGE);
      expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret_key');
      expect(logged).toHaveBeenCalledTimes(1);
      expect(fromWorkerError(err, 'm')).toBe(err);
      expect(logged).toHaveBeenCalledTimes(1);
    } finally {
      logged.mockRestore();
    }
  });
});
