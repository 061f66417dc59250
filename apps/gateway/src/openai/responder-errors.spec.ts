/**
 * What a client sees when a request fails after it was admitted, through the real GenerationService, OpenAIResponder
 * and error filter (the workers and scheduler are stubs): a bug's text (a TypeError naming internals) never reaches
 * it, streamed or not, and is logged once; a worker's refusal at Admit is an invalid_request_error naming its param.
 */
import { status } from '@grpc/grpc-js';
import { type ArgumentsHost, Logger } from '@nestjs/common';
import { worker } from '@inlaid/proto';
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import { INTERNAL_ERROR_MESSAGE, InlaidError, workerRequestError } from '../common/inlaid-error';
import { GenerationService } from '../generation/generation.service';
import type { GenerationInput } from '../generation/generation.types';
import type { RecordsService } from '../records/records.service';
import type { SchedulingService } from '../scheduling/scheduling.service';
import type { WorkersService } from '../workers/workers.service';
import { OpenAIErrorFilter } from './openai-error.filter';
import { OpenAIResponder } from './openai-responder';
import type { OpenAIRequest } from './request-validation';
import { startOnly } from '../testing/start-only';

const SECRET = "Cannot read properties of undefined (reading 'secret')";

/** A GenerationService whose admitted request yields one delta, then its ticket's events fail with `failure`. */
function generation(failure: Error): GenerationService {
  const workers = { pick: () => ({ addr: 'w1', prepare: () => Promise.resolve({ promptTokenIds: [1, 2], maxTokens: 4 }) }) };
  async function* events() {
    yield { kind: 'delta' as const, delta: worker.TokenDelta.fromPartial({ requestId: 'r', tokenIds: [7], text: 'x' }) };
    throw failure;
  }
  const scheduling = { submit: () => ({ admitted: Promise.resolve('w1'), events: events() }), cancel: () => undefined };
  const records = { add: () => undefined };
  return new GenerationService(workers as unknown as WorkersService, records as unknown as RecordsService, scheduling as unknown as SchedulingService);
}

const input: GenerationInput = {
  model: 'sql', prompt: 'hi', messages: [], sampling: { maxTokens: 4, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'completions',
};

/** An express Response stand-in recording what was written. */
function response() {
  const written: string[] = [];
  const res = Object.assign(new EventEmitter(), {
    destroyed: false, writableFinished: false, headersSent: false, closed: false, statusCode: 200,
    status(code: number) { res.statusCode = code; return res; },
    set: () => res,
    setHeader: () => res,
    flushHeaders: () => void (res.headersSent = true),
    write: (chunk: string) => void written.push(chunk),
    end: () => void (res.writableFinished = true),
    json: (body: unknown) => void written.push(JSON.stringify(body)),
  });
  return { res, written };
}

/** The `error` object of the SSE error event among `written`. */
function sseError(written: string[]): Record<string, unknown> {
  const event = written.find((w) => w.startsWith('data: {"error"'));
  if (event === undefined) throw new Error(`no SSE error event in ${JSON.stringify(written)}`);
  return (JSON.parse(event.slice('data: '.length)) as { error: Record<string, unknown> }).error;
}

describe('a request failing after admission', () => {
  let logged: jest.SpyInstance;
  beforeEach(() => {
    logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => jest.restoreAllMocks());

  const request = (stream: boolean): OpenAIRequest => ({ input, stream, includeUsage: false, n: 1 });

  it('streamed, on a bug: the SSE error event says only "internal error"; the bug is logged once', async () => {
    const { res, written } = response();
    await new OpenAIResponder(generation(new TypeError(SECRET))).respond('completions', request(true), res as unknown as Response);
    const error = sseError(written);
    expect(error).toMatchObject({ type: 'server_error', message: INTERNAL_ERROR_MESSAGE });
    expect(written.join('')).not.toContain('secret'); // before: "TypeError: Cannot read properties of undefined ..."
    expect(logged).toHaveBeenCalledTimes(1);
    expect(String(logged.mock.calls[0][0])).toContain('secret');
  });

  it('streamed, on a bug past the generation (in the stream code itself): the same, logged once', async () => {
    async function* deltas() {
      yield { text: 'x', tokenIds: [7], finishReason: null, promptTokens: 2, completionTokens: 1 };
      throw new TypeError(SECRET);
    }
    const start = () => Promise.resolve({ id: 'cmpl-1', model: 'sql', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
    const { res, written } = response();
    await new OpenAIResponder(startOnly(start)).respond('completions', request(true), res as unknown as Response);
    expect(sseError(written)).toMatchObject({ type: 'server_error', message: INTERNAL_ERROR_MESSAGE });
    expect(written.join('')).not.toContain('secret'); // before: String(err), "TypeError: Cannot read properties ..."
    expect(logged).toHaveBeenCalledTimes(1);
  });

  it('not streamed, on a bug: the error body says only "internal error"; the bug is logged once', async () => {
    const { res, written } = response();
    const failed = await new OpenAIResponder(generation(new TypeError(SECRET)))
      .respond('completions', request(false), res as unknown as Response)
      .then(() => null, (err: unknown) => err);
    expect(failed).toBeInstanceOf(InlaidError);
    const host = { switchToHttp: () => ({ getResponse: () => res }) } as unknown as ArgumentsHost;
    new OpenAIErrorFilter().catch(failed, host); // as Nest does with what the controller throws
    expect(res.statusCode).toBe(500);
    expect(JSON.parse(written[0] ?? '{}')).toMatchObject({ error: { type: 'server_error', message: INTERNAL_ERROR_MESSAGE } });
    expect(written.join('')).not.toContain('secret'); // before: the TypeError's message, in a 500 body
    expect(logged).toHaveBeenCalledTimes(1);
  });

  it('streamed, on a worker refusing the Admit: an invalid_request_error naming the param', async () => {
    const { res, written } = response();
    const refusal = workerRequestError({ kind: worker.RequestErrorKind.REQUEST_ERROR_KIND_BAD_INPUT, message: 'response_format: invalid regex: unbalanced (' });
    await new OpenAIResponder(generation(refusal)).respond('completions', request(true), res as unknown as Response);
    expect(sseError(written)).toMatchObject({ type: 'invalid_request_error', param: 'response_format', message: refusal.message });
    expect(refusal.status).toBe(status.INVALID_ARGUMENT);
    expect(logged).not.toHaveBeenCalled();
  });
});
