/**
 * WorkerConnection against a real grpc-js fake worker (GetInfo + Session): a RequestError event (the worker refusing an
 * Admit) fails the request as bad input (HTTP 400 naming the param), not as a server error; a frozen worker (its
 * socket open but silent, as under SIGSTOP or a partition without RST) is dropped by keepalive pings, failing its
 * requests with UNAVAILABLE, where before the stream waited forever.
 */
import { type ChannelOptions, Server, ServerCredentials, type ServerDuplexStream, status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { toOpenAIError } from '../common/http-mapping';
import { INTERNAL_ERROR_MESSAGE, InlaidError } from '../common/inlaid-error';
import { Logger } from '@nestjs/common';
import type { AsyncQueue } from './async-queue';
import { CHANNEL_OPTIONS, WorkerConnection } from './worker-connection';

const quiet = { log: () => undefined, warn: () => undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

/** A worker whose Session answers each Admit with `onAdmit` (nothing by default: the request just runs). */
async function fakeWorker(
  onAdmit: (admit: worker.Admit, session: ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>) => void,
  onAbort: (requestId: string) => void = () => undefined,
) {
  const server = new Server();
  const getInfo = (_call: unknown, cb: (e: null, r: worker.WorkerInfo) => void) =>
    cb(null, worker.WorkerInfo.fromPartial({ workerId: 'w1', baseModel: 'm', models: [{ id: 'm', parent: '' }] }));
  const session = (call: ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>) => {
    call.on('data', (msg: worker.ControlMessage) => {
      if (msg.kind?.$case === 'admit') onAdmit(msg.kind.value, call);
      if (msg.kind?.$case === 'abort') onAbort(msg.kind.value.requestId);
    });
    call.on('error', () => undefined);
  };
  server.addService(worker.WorkerService, { getInfo, session } as unknown as worker.WorkerServer);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port };
}

const admit = (requestId: string): worker.Admit => worker.Admit.fromPartial({ requestId, model: 'm', promptTokenIds: [1, 2] });

/** The queue's outcome: the error it failed with, or 'ended'. */
async function outcome(queue: AsyncQueue<worker.TokenDelta>): Promise<unknown> {
  try {
    for await (const _delta of queue) void _delta;
    return 'ended';
  } catch (err) {
    return err;
  }
}

describe('WorkerConnection channel options', () => {
  it('pings the worker (keepalive), idle or not, so a frozen worker is noticed', () => {
    expect(CHANNEL_OPTIONS['grpc.keepalive_time_ms']).toBe(10_000);
    expect(CHANNEL_OPTIONS['grpc.keepalive_timeout_ms']).toBe(5_000);
    expect(CHANNEL_OPTIONS['grpc.keepalive_permit_without_calls']).toBe(1);
  });
});

describe('WorkerConnection: a RequestError event (the worker refusing an Admit)', () => {
  let server: Server;
  let conn: WorkerConnection;

  beforeAll(async () => {
    const fake = await fakeWorker((a, call) =>
      call.write({ kind: { $case: 'error', value: { requestId: a.requestId, message: a.requestId === 'rf' ? 'response_format: invalid regex: (' : 'prompt_logprobs: 20 on a 90000-token prompt is 1890000 entries, more than 1000000' } } }),
    );
    server = fake.server;
    conn = new WorkerConnection(`127.0.0.1:${fake.port}`, quiet);
    conn.start();
    await eventually(() => conn.ready, 'the link is up');
  });

  afterAll(() => {
    conn?.stop();
    server?.forceShutdown();
  });

  it('fails the request with INVALID_ARGUMENT (HTTP 400 invalid_request_error), not INTERNAL (500)', async () => {
    const err = await outcome(conn.admit(admit('lp')));
    expect(err).toBeInstanceOf(InlaidError);
    expect((err as InlaidError).status).toBe(status.INVALID_ARGUMENT); // before: INTERNAL, "Worker error: ..."
    const { httpStatus, body } = toOpenAIError(err as InlaidError);
    expect(httpStatus).toBe(400);
    expect(body.error).toMatchObject({ type: 'invalid_request_error', message: expect.stringMatching(/^prompt_logprobs: 20/), param: 'prompt_logprobs' });
  });

  it('names the parameter the worker message starts with', async () => {
    const err = (await outcome(conn.admit(admit('rf')))) as InlaidError;
    expect(err.status).toBe(status.INVALID_ARGUMENT);
    expect(err.details.param).toBe('response_format');
    expect(toOpenAIError(err).body.error).toMatchObject({ param: 'response_format' });
  });
});

/**
 * Every RequestError text the worker sends (engine.py, engine_loop.py, servicer.py, grammar_cache.py, adapters.py),
 * each with the status it must become. Before: every one but "request refused: ..." was a 400 carrying its text.
 */
const REQUEST_ERRORS: readonly (readonly [string, status])[] = [
  // bad input: the prompt checks (engine.py check_prompt) and sampling_from_proto's SamplingErrors
  ['the prompt is empty', status.INVALID_ARGUMENT],
  ["the prompt has 9000 tokens; this model's maximum context length is 8192 tokens (prompt plus at least one generated token)", status.INVALID_ARGUMENT],
  ['prompt token id 99999 is outside the vocabulary (size 32000)', status.INVALID_ARGUMENT],
  ['logit_bias: token id 99999 is outside the vocabulary (size 32000)', status.INVALID_ARGUMENT],
  ['response_format: invalid regex: unbalanced parenthesis', status.INVALID_ARGUMENT],
  ['prompt_logprobs: 20 on a 90000-token prompt is 1890000 entries, more than 1000000: ask for fewer', status.INVALID_ARGUMENT],
  ['max_tokens must be at least 1, got 0', status.INVALID_ARGUMENT],
  ['temperature must be in [0, 100], got 200.0', status.INVALID_ARGUMENT],
  ['top_p must be in (0, 1], got 0.0', status.INVALID_ARGUMENT],
  ['seed must be in [0, 2^64), got -1', status.INVALID_ARGUMENT],
  ['stop strings must not be empty', status.INVALID_ARGUMENT],
  ['at most 16 stop strings, got 17', status.INVALID_ARGUMENT],
  ['stop_token_ids must be non-negative', status.INVALID_ARGUMENT],
  // a ClosedError reaching the Admit catch-all (servicer.py): shutdown, not a bug
  ['request refused: ClosedError: the grammar cache is closed (the worker is shutting down)', status.UNAVAILABLE],
  ['presence_penalty must be in [-2, 2], got 3.0', status.INVALID_ARGUMENT],
  ['frequency_penalty must be in [-2, 2], got nan', status.INVALID_ARGUMENT],
  ['repetition_penalty must be in (0, 2], got 0.0', status.INVALID_ARGUMENT],
  ['logprobs must be in [0, 20], got 21', status.INVALID_ARGUMENT],
  ['prompt_logprobs must be in [0, 20], got 21', status.INVALID_ARGUMENT],
  ['min_p must be in [0, 1], got 2.0', status.INVALID_ARGUMENT],
  ['min_tokens must be non-negative, got -1', status.INVALID_ARGUMENT],
  // the worker shutting down (compile_pool.ClosedError texts): retryable elsewhere
  ['the grammar cache is closed (the worker is shutting down)', status.UNAVAILABLE],
  ['the grammar cache closed while this request waited (the worker is shutting down)', status.UNAVAILABLE],
  ["the grammar's compile was cancelled: its pool closed (the worker is shutting down)", status.UNAVAILABLE],
  ['compile pool grammar is closed', status.UNAVAILABLE],
  // a resumed request's replay that waited behind other requests' replays (grammar_cache.py): load, retryable
  ["response_format: replaying the resumed output through the json_schema took longer than 30 s (it waited for other requests' replays)", status.UNAVAILABLE],
  // an adapter unloaded between Prepare and Admit (adapters.UnknownModelError)
  ["the model 'task-a' does not exist", status.NOT_FOUND],
  // the worker's (or the gateway's) own failures: never the client's fault
  ['the worker failed while running this request', status.INTERNAL],
  ["the grammar's compile was cancelled", status.INTERNAL],
  ["request id 'secret-r1' is already in flight", status.INTERNAL],
  ['request_id is required', status.INTERNAL],
  ['resumed_output_tokens must be in [0, 5), got 7', status.INTERNAL],
  ["request 'secret-r1': a grammar state that replayed 3 tokens was handed for 4 resumed output tokens", status.INTERNAL],
  ["request 'secret-r1': the grammar state is not of its response_format", status.INTERNAL],
  ["request refused: KeyError: 'secret_slot'", status.INTERNAL],
  // response_format texts that are the worker's own failures (grammar_cache.py), not the client's schema
  ["response_format: the compile could not start: can't start new thread", status.INTERNAL],
  ["response_format: the resumed output's replay could not start: RuntimeError: can't start new thread", status.INTERNAL],
  ['response_format: replaying the resumed output failed: RuntimeError: secret xgrammar state', status.INTERNAL],
  // still the client's: a schema too complex to compile in time
  ['response_format: the json_schema took longer than 10 s to compile', status.INVALID_ARGUMENT],
];

const HTTP_OF: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.UNAVAILABLE]: 503,
  [status.NOT_FOUND]: 404,
  [status.INTERNAL]: 500,
};

describe('WorkerConnection: each RequestError text the worker sends, classified', () => {
  let server: Server;
  let conn: WorkerConnection;
  let logged: jest.SpyInstance;

  beforeAll(async () => {
    // request id `e<i>` is answered with REQUEST_ERRORS[i]
    const fake = await fakeWorker((a, call) =>
      call.write({ kind: { $case: 'error', value: { requestId: a.requestId, message: REQUEST_ERRORS[Number(a.requestId.slice(1))][0] } } }),
    );
    server = fake.server;
    conn = new WorkerConnection(`127.0.0.1:${fake.port}`, quiet);
    conn.start();
    await eventually(() => conn.ready, 'the link is up');
  });
  beforeEach(() => (logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined)));
  afterEach(() => logged.mockRestore());
  afterAll(() => {
    conn?.stop();
    server?.forceShutdown();
  });

  it.each(REQUEST_ERRORS.map(([message, code], i) => [i, message, code] as const))('#%i %j -> status %i', async (i, message, code) => {
    const err = (await outcome(conn.admit(admit(`e${i}`)))) as InlaidError;
    expect(err).toBeInstanceOf(InlaidError);
    expect(err.status).toBe(code);
    const { httpStatus, body } = toOpenAIError(err);
    expect(httpStatus).toBe(HTTP_OF[code]);
    if (code === status.INVALID_ARGUMENT) {
      expect(body.error).toMatchObject({ type: 'invalid_request_error', message });
    } else if (code === status.NOT_FOUND) {
      expect(body.error).toMatchObject({ code: 'model_not_found', param: 'model', message: 'The model `task-a` does not exist.' });
    } else if (code === status.UNAVAILABLE) {
      expect(body.error.message).toMatch(message.startsWith('response_format:') ? /busy/ : /shutting down/);
    } else {
      // the worker's text (request ids, slots) stays in the log, once
      expect(body.error).toMatchObject({ type: 'server_error', message: INTERNAL_ERROR_MESSAGE });
      expect(JSON.stringify(body)).not.toContain('secret');
      expect(logged).toHaveBeenCalledTimes(1);
      expect(String(logged.mock.calls[0][0])).toContain(message);
      return;
    }
    expect(logged).not.toHaveBeenCalled();
  });
});

/** A TCP relay to `port` that can freeze: both directions stop flowing, yet no socket is closed (a stopped process). */
async function freezableRelay(port: number) {
  const sockets: Socket[] = [];
  let frozen = false;
  const relay: NetServer = createServer((down) => {
    const up = connect(port, '127.0.0.1');
    sockets.push(down, up);
    const forward = (from: Socket, to: Socket) => from.on('data', (chunk: Buffer) => void (frozen || to.write(chunk)));
    forward(down, up);
    forward(up, down);
    down.on('error', () => undefined);
    up.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as AddressInfo).port,
    freeze: () => void (frozen = true),
    close: () => {
      sockets.forEach((s) => s.destroy());
      relay.close();
    },
  };
}

describe('WorkerConnection: a frozen worker', () => {
  it('fails its running request with UNAVAILABLE once a keepalive ping goes unanswered', async () => {
    const fake = await fakeWorker(() => undefined); // the request runs on, emitting nothing
    const relay = await freezableRelay(fake.port);
    // the default options with pings scaled down from 10 s / 5 s so the test takes about a second
    const fast: ChannelOptions = { ...CHANNEL_OPTIONS, 'grpc.keepalive_time_ms': 300, 'grpc.keepalive_timeout_ms': 300 };
    // no reconnect within the test (a GetInfo through the frozen relay would hold its 2 s deadline timer past the end)
    const noRetry = { baseMs: 60_000, maxMs: 60_000 };
    const conn = new WorkerConnection(`127.0.0.1:${relay.port}`, quiet, undefined, noRetry, undefined, fast);
    try {
      conn.start();
      await eventually(() => conn.ready, 'the link is up');
      const running = outcome(conn.admit(admit('r1')));
      await sleep(100);
      relay.freeze();
      const t0 = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('still waiting'), 5000)));
      const err = (await Promise.race([running, waited]).finally(() => clearTimeout(timer))) as InlaidError | string;
      expect(err).toBeInstanceOf(InlaidError); // before (no keepalive): 'still waiting', forever
      expect((err as InlaidError).status).toBe(status.UNAVAILABLE);
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(conn.ready).toBe(false);
    } finally {
      conn.stop();
      relay.close();
      fake.server.forceShutdown();
    }
  });
});
