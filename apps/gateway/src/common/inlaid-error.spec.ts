/**
 * fromWorkerError never passes an unexpected error's own text (a TypeError's, naming internals) to the client: it
 * becomes INTERNAL_ERROR_MESSAGE and is logged, once; gRPC status errors and InlaidErrors keep their messages.
 * A worker's refusal is classified by the kind it names (a RequestError's kind at Admit, the `inlaid-error-kind` trailing
 * metadata of a unary call), never by its text; a failure without one is the link's (a 503 / 504 with a fixed message,
 * grpc-js's text, which names the worker's address, only logged) or else a logged 500, on the Session and on unary
 * calls alike (an older worker's INVALID_ARGUMENT too: workers are upgraded before the gateway).
 */
import { status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { logSpies } from '../testing/log-spies';
import { workerRefusal } from '../testing/worker-refusal';
import { toOpenAIError } from './http-mapping';
import {
  fromWorkerError,
  INTERNAL_ERROR_MESSAGE,
  InlaidError,
  rerunRefusal,
  WORKER_TIMEOUT_MESSAGE,
  WORKER_UNAVAILABLE_MESSAGE,
  workerRequestError,
} from './inlaid-error';

const Kind = worker.RequestErrorKind;
const grpcError = workerRefusal;

describe('fromWorkerError with an unexpected error', () => {
  const spies = logSpies();

  it('hides its text from the client and logs it once', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'secret')");
    const err = fromWorkerError(bug, 'm');
    expect(err.status).toBe(status.INTERNAL);
    expect(err.message).toBe(INTERNAL_ERROR_MESSAGE); // before: the TypeError's message
    expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret');
    expect(spies.error).toHaveBeenCalledTimes(1);
    expect(spies.error.mock.calls[0][0]).toBe(bug);
    // its result passed on again (a later catch) is kept as is, and not logged again
    expect(fromWorkerError(err, 'm')).toBe(err);
    expect(spies.error).toHaveBeenCalledTimes(1);
  });

  it("keeps the messages of a worker's kind-named refusals and of InlaidErrors, logging neither", () => {
    const named = grpcError(status.INVALID_ARGUMENT, 'prompt has 900 tokens', 'REQUEST_ERROR_KIND_BAD_INPUT');
    expect(fromWorkerError(named, 'm').message).toBe('prompt has 900 tokens');
    const own = InlaidError.unavailable('Worker w1 disconnected.');
    expect(fromWorkerError(own, 'm')).toBe(own);
    expect(spies.error).not.toHaveBeenCalled();
  });
});

describe("fromWorkerError of a worker's unary refusal naming its kind", () => {
  const spies = logSpies();

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
    expect(spies.error).toHaveBeenCalledTimes(1);
    expect(String(spies.error.mock.calls[0][0])).toContain('could not start');
  });

  it('is a logged 500 for a kind this gateway does not know', () => {
    const err = fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'the prompt is empty', 'REQUEST_ERROR_KIND_SOMETHING_NEW'), 'm');
    expect(err.status).toBe(status.INTERNAL);
    expect(spies.error).toHaveBeenCalledTimes(1);
  });

  it('names the parameter a bad-input refusal starts with', () => {
    const err = fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'prompt_logprobs: 20 on a 90000-token prompt is too many entries', 'REQUEST_ERROR_KIND_BAD_INPUT'), 'm');
    expect([err.status, err.details.param]).toEqual([status.INVALID_ARGUMENT, 'prompt_logprobs']);
    expect(fromWorkerError(grpcError(status.INVALID_ARGUMENT, 'the prompt is too long', 'REQUEST_ERROR_KIND_BAD_INPUT'), 'm').details.param).toBeUndefined();
    expect(spies.error).not.toHaveBeenCalled();
  });
});

describe('fromWorkerError of a failure naming no kind', () => {
  const spies = logSpies();

  it("is the link's with a fixed message: grpc-js's text, naming the worker's address, is logged, never sent", () => {
    const cases: Array<[status, string, status, string]> = [
      [status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 10.0.0.7:50051', status.UNAVAILABLE, WORKER_UNAVAILABLE_MESSAGE],
      [status.CANCELLED, 'Cancelled on client', status.UNAVAILABLE, WORKER_UNAVAILABLE_MESSAGE],
      [status.DEADLINE_EXCEEDED, 'Deadline exceeded after 15.001s,remote_addr=10.0.0.7:50051', status.DEADLINE_EXCEEDED, WORKER_TIMEOUT_MESSAGE],
    ];
    for (const [code, text, want, message] of cases) {
      const err = fromWorkerError(grpcError(code, text), 'm');
      expect([err.status, err.message]).toEqual([want, message]); // before: `Worker unavailable: ${text}`, or the text itself
      expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('10.0.0.7');
    }
    expect(spies.warn).toHaveBeenCalledTimes(3);
    expect(String(spies.warn.mock.calls[2][0])).toContain('remote_addr=10.0.0.7:50051');
    expect(spies.error).not.toHaveBeenCalled();
  });

  it("is otherwise the worker's own failure, a logged 500, whatever its code (as a RequestError without a kind is)", () => {
    // an older worker's own grammar fault as INVALID_ARGUMENT, grpc-js's oversized message (was a 429), an INTERNAL
    const cases: Array<[status, string]> = [
      [status.INVALID_ARGUMENT, 'response_format: the compile could not start: /opt/inlaid/secret'],
      [status.RESOURCE_EXHAUSTED, 'Received message larger than max (5000000 vs. 4194304)'],
      [status.NOT_FOUND, "the model 'a' does not exist"],
      [status.INTERNAL, 'engine step failed'],
    ];
    for (const [code, text] of cases) {
      const err = fromWorkerError(grpcError(code, text), 'm');
      expect(toOpenAIError(err)).toMatchObject({ httpStatus: 500, body: { error: { message: INTERNAL_ERROR_MESSAGE } } });
    }
    expect(spies.error).toHaveBeenCalledTimes(cases.length);
    expect(String(spies.error.mock.calls[0][0])).toMatch(/no error kind.*INVALID_ARGUMENT.*secret/);
    const unnamed = workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_UNSPECIFIED, message: cases[0][1] });
    expect(unnamed.status).toBe(status.INTERNAL); // the Session's path: the same policy
  });
});

describe('rerunRefusal (a run the gateway admitted again)', () => {
  const spies = logSpies();

  it("makes a worker's BAD_INPUT a logged 500 and keeps any other error", () => {
    const bad = workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_BAD_INPUT, message: "response_format: the resumed output's token 3 (7) does not match the grammar" });
    const err = rerunRefusal(bad) as InlaidError;
    expect([err.status, err.message, err.details.workerKind]).toEqual([status.INTERNAL, INTERNAL_ERROR_MESSAGE, Kind.REQUEST_ERROR_KIND_INTERNAL]);
    expect(String(spies.error.mock.calls[0][0])).toContain('re-admitted run');
    const closing = workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, message: 'x' });
    expect(rerunRefusal(closing)).toBe(closing);
    const own = new InlaidError(status.INVALID_ARGUMENT, 'gateway-side');
    expect(rerunRefusal(own)).toBe(own);
    expect(spies.error).toHaveBeenCalledTimes(1);
  });
});

describe('workerRequestError (a RequestError event)', () => {
  const spies = logSpies();

  it('maps each kind to one status, never reading the text', () => {
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
    // the kind rides along (never sent): what the dispatcher and Prepare's retry act on
    expect(workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, message: text }).details.workerKind).toBe(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN);
    expect(workerRequestError({ kind: 99 as worker.RequestErrorKind, message: text }).details.workerKind).toBe(Kind.UNRECOGNIZED);
    expect(spies.error).toHaveBeenCalledTimes(5);
    expect(String(spies.error.mock.calls[1][0])).toMatch(/no error kind/);
  });
});

describe("the worker's own failures (a bug or a fault of its own, not bad input)", () => {
  const spies = logSpies();

  it('is a 500 with the generic message, its text logged, not sent', () => {
    const err = workerRequestError({ kind: Kind.REQUEST_ERROR_KIND_INTERNAL, message: "request refused: KeyError: 'secret_slot'" }); // its Admit catch-all
    expect(err.status).toBe(status.INTERNAL);
    expect(err.message).toBe(INTERNAL_ERROR_MESSAGE);
    expect(toOpenAIError(err)).toMatchObject({ httpStatus: 500, body: { error: { type: 'server_error' } } });
    expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret_slot');
    expect(spies.error).toHaveBeenCalledTimes(1);
  });
});

describe("fromWorkerError of a worker's UNKNOWN (a handler that raised)", () => {
  const spies = logSpies();

  it('is a 500 with the generic message, its text logged once, not sent', () => {
    const err = fromWorkerError(grpcError(status.UNKNOWN, "Exception calling application: 'secret_key'"), 'm');
    expect(err.status).toBe(status.INTERNAL); // before: UNKNOWN, the worker's text passed on
    expect(err.message).toBe(INTERNAL_ERROR_MESSAGE);
    expect(JSON.stringify(toOpenAIError(err).body)).not.toContain('secret_key');
    expect(spies.error).toHaveBeenCalledTimes(1);
    expect(fromWorkerError(err, 'm')).toBe(err);
    expect(spies.error).toHaveBeenCalledTimes(1);
  });
});
