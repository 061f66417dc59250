/**
 * fromWorkerError never passes an unexpected error's own text (a TypeError's, naming internals) to the client: it
 * becomes INTERNAL_ERROR_MESSAGE and is logged, once; gRPC status errors and InlaidErrors keep their messages.
 * workerRefusal (a worker's INVALID_ARGUMENT at Prepare) is a 400 naming its parameter, unless the text is one of the
 * worker's own response_format failures; workerRequestError (a RequestError at Admit) also sorts out the catch-all.
 */
import { Metadata, status } from '@grpc/grpc-js';
import { Logger } from '@nestjs/common';
import { toOpenAIError } from './http-mapping';
import { fromWorkerError, INTERNAL_ERROR_MESSAGE, InlaidError, workerRefusal, workerRequestError } from './inlaid-error';

const grpcError = (code: status, details: string) => Object.assign(new Error(`${code} ${details}`), { code, details, metadata: new Metadata() });

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

describe('workerRefusal', () => {
  it('is a 400 invalid_request_error naming the parameter its message starts with', () => {
    const err = workerRefusal('logit_bias: token id 99999 is outside the vocabulary');
    expect(err.status).toBe(status.INVALID_ARGUMENT);
    expect(toOpenAIError(err)).toMatchObject({ httpStatus: 400, body: { error: { type: 'invalid_request_error', param: 'logit_bias' } } });
    expect(workerRefusal('prompt_logprobs: 20 on a 90000-token prompt is too many entries').details.param).toBe('prompt_logprobs');
    expect(workerRefusal('the prompt is too long').details.param).toBeUndefined();
  });
});

describe("the worker's own failures (a bug or a fault of its own, not bad input)", () => {
  it('is a 500 with the generic message, its text logged, not sent', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const err = workerRequestError("request refused: KeyError: 'secret_slot'"); // its Admit catch-all
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

describe('a response_format failure of the worker itself, at Prepare as at Admit', () => {
  it('is a logged 500 from both classifiers, not a 400 blaming the client', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const text = 'response_format: the compile could not start: RuntimeError: cannot start new thread';
      for (const err of [workerRefusal(text), workerRequestError(text)]) {
        expect(err.status).toBe(status.INTERNAL);
        expect(err.message).toBe(INTERNAL_ERROR_MESSAGE);
      }
      expect(logged).toHaveBeenCalledTimes(2);
    } finally {
      logged.mockRestore();
    }
  });
});
