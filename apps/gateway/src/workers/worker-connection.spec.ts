/**
 * WorkerConnection against a real grpc-js fake worker (GetInfo + Session): a RequestError event (the worker refusing an
 * Admit) fails the request as its kind says (bad input: HTTP 400 naming the param), whatever its text; a frozen worker
 * (its socket open but silent, as under SIGSTOP or a partition without RST) is dropped by keepalive pings, failing its
 * requests with UNAVAILABLE, where before the stream waited forever.
 */
import { type ChannelOptions, Server, type ServerDuplexStream, status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { toOpenAIError } from '../common/http-mapping';
import { INTERNAL_ERROR_MESSAGE, InlaidError } from '../common/inlaid-error';
import { eventually, sleep } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import { logSpies } from '../testing/log-spies';
import type { AsyncQueue } from './async-queue';
import { CHANNEL_OPTIONS, WorkerConnection } from './worker-connection';

const quiet = { log: () => undefined, warn: () => undefined };
const Kind = worker.RequestErrorKind;
/** How long a link may take to come up (connect, GetInfo, Session). */
const UP_MS = 3000;

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
  return { server, port: await bindLocal(server) };
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
    const message = (id: string) => (id === 'rf' ? 'response_format: invalid regex: (' : 'prompt_logprobs: 20 on a 90000-token prompt is 1890000 entries, more than 1000000');
    const fake = await fakeWorker((a, call) =>
      call.write({ kind: { $case: 'error', value: { requestId: a.requestId, message: message(a.requestId), kind: Kind.REQUEST_ERROR_KIND_BAD_INPUT } } }),
    );
    server = fake.server;
    conn = new WorkerConnection(`127.0.0.1:${fake.port}`, quiet);
    conn.start();
    await eventually(() => conn.ready, 'the link is up', UP_MS);
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
 * RequestErrors as the worker sends them (engine.py, engine_loop.py, servicer.py, grammar_cache.py, adapters.py: each
 * raise names its kind), each with the status it must become; then texts paired with another kind, and no kind: the
 * kind alone decides. Before, the gateway read the text (a reworded message changed the status).
 */
const REQUEST_ERRORS: readonly (readonly [worker.RequestErrorKind, string, status])[] = [
  // bad input: the prompt checks (engine.py check_prompt) and sampling_from_proto's SamplingErrors
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'the prompt is empty', status.INVALID_ARGUMENT],
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'prompt token id 99999 is outside the vocabulary (size 32000)', status.INVALID_ARGUMENT],
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'logit_bias: token id 99999 is outside the vocabulary (size 32000)', status.INVALID_ARGUMENT],
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'temperature must be in [0, 100], got 200.0', status.INVALID_ARGUMENT],
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'response_format: the json_schema took longer than 10 s to compile', status.INVALID_ARGUMENT],
  // the worker shutting down (ClosedError), also through its Admit catch-all
  [Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the grammar cache is closed (the worker is shutting down)', status.UNAVAILABLE],
  [Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'compile pool grammar is closed', status.UNAVAILABLE],
  // a resumed request's replay that waited behind other requests' replays (grammar_cache.py): load, retryable
  [Kind.REQUEST_ERROR_KIND_OVERLOADED, "response_format: replaying the resumed output through the json_schema took longer than 30 s (it waited for other requests' replays)", status.UNAVAILABLE],
  // an adapter unloaded between Prepare and Admit (adapters.UnknownModelError)
  [Kind.REQUEST_ERROR_KIND_UNKNOWN_MODEL, "the model 'task-a' does not exist", status.NOT_FOUND],
  // the worker's (or the gateway's) own failures: never the client's fault
  [Kind.REQUEST_ERROR_KIND_INTERNAL, 'the worker failed while running this request', status.INTERNAL],
  [Kind.REQUEST_ERROR_KIND_INTERNAL, "request id 'secret-r1' is already in flight", status.INTERNAL],
  [Kind.REQUEST_ERROR_KIND_INTERNAL, 'resumed_output_tokens must be in [0, 5), got 7', status.INTERNAL],
  [Kind.REQUEST_ERROR_KIND_INTERNAL, "request refused: KeyError: 'secret_slot'", status.INTERNAL],
  [Kind.REQUEST_ERROR_KIND_INTERNAL, "response_format: the compile could not start: can't start new thread (secret)", status.INTERNAL],
  // the kind, not the text: texts that once read as another class
  [Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'the prompt is way too long for this model', status.INVALID_ARGUMENT], // once a 500: no pattern matched
  [Kind.REQUEST_ERROR_KIND_INTERNAL, 'the prompt is empty (secret: a gateway bug sent no tokens)', status.INTERNAL],
  [Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'stopping', status.UNAVAILABLE],
  // no kind (an older worker) or one this gateway does not know: the worker's failure, logged; never its text's class
  [Kind.REQUEST_ERROR_KIND_UNSPECIFIED, 'the prompt is empty (secret)', status.INTERNAL],
  [42 as worker.RequestErrorKind, 'the prompt is empty (secret)', status.INTERNAL],
];

const HTTP_OF: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.UNAVAILABLE]: 503,
  [status.NOT_FOUND]: 404,
  [status.INTERNAL]: 500,
};

describe('WorkerConnection: each RequestError the worker sends, classified by its kind', () => {
  let server: Server;
  let conn: WorkerConnection;
  const spies = logSpies();

  beforeAll(async () => {
    // request id `e<i>` is answered with REQUEST_ERRORS[i]
    const fake = await fakeWorker((a, call) => {
      const [kind, message] = REQUEST_ERRORS[Number(a.requestId.slice(1))];
      call.write({ kind: { $case: 'error', value: { requestId: a.requestId, message, kind } } });
    });
    server = fake.server;
    conn = new WorkerConnection(`127.0.0.1:${fake.port}`, quiet);
    conn.start();
    await eventually(() => conn.ready, 'the link is up', UP_MS);
  });
  afterAll(() => {
    conn?.stop();
    server?.forceShutdown();
  });

  it.each(REQUEST_ERRORS.map(([kind, message, code], i) => [i, kind, message, code] as const))('#%i kind %i %j -> status %i', async (i, kind, message, code) => {
    const err = (await outcome(conn.admit(admit(`e${i}`)))) as InlaidError;
    expect(err).toBeInstanceOf(InlaidError);
    expect(err.status).toBe(code);
    const { httpStatus, body } = toOpenAIError(err);
    expect(httpStatus).toBe(HTTP_OF[code]);
    if (code === status.INVALID_ARGUMENT) {
      expect(body.error).toMatchObject({ type: 'invalid_request_error', message });
    } else if (code === status.NOT_FOUND) {
      expect(body.error).toMatchObject({ code: 'model_not_found', param: 'model', message });
    } else if (code === status.UNAVAILABLE) {
      expect(body.error.message).toMatch(kind === Kind.REQUEST_ERROR_KIND_OVERLOADED ? /busy/ : /shutting down/);
    } else {
      // the worker's text (request ids, slots) stays in the log, once
      expect(body.error).toMatchObject({ type: 'server_error', message: INTERNAL_ERROR_MESSAGE });
      expect(JSON.stringify(body)).not.toContain('secret');
      expect(spies.error).toHaveBeenCalledTimes(1);
      expect(String(spies.error.mock.calls[0][0])).toContain(message);
      return;
    }
    expect(spies.error).not.toHaveBeenCalled();
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
      await eventually(() => conn.ready, 'the link is up', UP_MS);
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
