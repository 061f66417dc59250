/**
 * WorkersService.pick's wait for a worker catching up on a model (its adapter hold), over a real grpc-js fake worker
 * that streams WorkerStates as a busy worker does (one a step): the wait keeps one timer and one abort listener and
 * routes again only on the link events that can change its answer ('up', 'info', 'down', a state that flips
 * accepting). Before, every state woke every waiting request, which made a new timer and abort listener and routed
 * again each time. The client's deadline bounds the wait (TokenizerCalls passes it).
 */
import { Server, status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { worker } from '@inlaid/proto';
import type { InlaidError } from '../common/inlaid-error';
import { TokenizerCalls } from '../openai/tokenizer-calls';
import { eventually, sleep } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import type { WorkerConnection } from './worker-connection';
import { WorkersService } from './workers.service';

type Session = ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>;

/** A worker serving base `m`; `sessions` holds its Sessions (the last the open one). */
async function fakeWorker(): Promise<{ server: Server; addr: string; sessions: Session[] }> {
  const server = new Server();
  const sessions: Session[] = [];
  const getInfo = (_call: unknown, cb: (e: null, r: worker.WorkerInfo) => void) =>
    cb(null, worker.WorkerInfo.fromPartial({ workerId: 'w', baseModel: 'm', models: [{ id: 'm', parent: '' }], state: { workerId: 'w' } }));
  const session = (call: Session) => {
    sessions.push(call);
    call.on('error', () => undefined);
  };
  server.addService(worker.WorkerService, { getInfo, session } as unknown as worker.WorkerServer);
  return { server, addr: `127.0.0.1:${await bindLocal(server)}`, sessions };
}

describe('WorkersService.pick waiting for a worker catching up on the model', () => {
  let w: Awaited<ReturnType<typeof fakeWorker>>;
  let workers: WorkersService;
  let conn: WorkerConnection;
  let states = 0;

  beforeAll(async () => {
    w = await fakeWorker();
    workers = new WorkersService({ workerAddrs: [w.addr], workerTls: null } as unknown as GatewayConfig);
    workers.onLink((_c, e) => void (e === 'state' && states++));
    workers.onModuleInit();
    await eventually(() => workers.acceptingConnections().length === 1 && w.sessions.length === 1, 'link up', 3000);
    conn = workers.connections()[0] as WorkerConnection;
  });

  afterAll(() => {
    workers?.onModuleDestroy();
    w?.server.forceShutdown();
  });

  /** Sends `n` WorkerStates (1 ms apart, as steps under load) and waits until the gateway has seen them. */
  async function busySteps(n: number, draining = false): Promise<void> {
    const before = states;
    for (let i = 0; i < n; i++) {
      w.sessions.at(-1)?.write({ kind: { $case: 'state', value: worker.WorkerState.fromPartial({ workerId: 'w', draining }) } });
      await sleep(1);
    }
    await eventually(() => states >= before + n, `${n} states seen`, 3000);
  }

  it('keeps one abort listener and routes again only when the hold changes, not on every state', async () => {
    conn.holdAdapters(new Set(['sql'])); // its catch-up may still load sql there
    const ac = new AbortController();
    let listeners = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...args: Parameters<AbortSignal['addEventListener']>) => (listeners++, add(...args))) as AbortSignal['addEventListener'];
    const routes = jest.spyOn(workers, 'acceptingConnections');
    try {
      let picked: WorkerConnection | null = null;
      const wait = workers.pick('sql', undefined, ac.signal).then((c) => (picked = c));
      await busySteps(40);
      expect(picked).toBeNull();
      expect(listeners).toBe(1); // before: 41, one more on each state (and a timer each)
      expect(routes.mock.calls.length).toBe(1); // routed once; before: again on each of the 40 states
      conn.holdAdapters(null); // caught up ('info')
      await wait;
      expect(picked).toBe(conn);
      expect(routes.mock.calls.length).toBe(2);
    } finally {
      routes.mockRestore();
      conn.holdAdapters(null);
    }
  });

  it("ends at the client's deadline (Tokenize), not after the gateway's whole wait", async () => {
    conn.holdAdapters(new Set(['sql']));
    workers.catchUpWaitMs = 3000;
    try {
      const t0 = Date.now();
      const err = await new TokenizerCalls(workers)
        .tokenize(worker.TokenizeRequest.fromPartial({ model: 'sql', prompt: 'hi' }), { deadline: Date.now() + 150 })
        .then(() => null, (e: unknown) => e as InlaidError);
      expect(err?.status).toBe(status.DEADLINE_EXCEEDED); // before: UNAVAILABLE after 3 s (the client long gone)
      expect(Date.now() - t0).toBeLessThan(1500);
      workers.catchUpWaitMs = 200;
      const own = await workers.pick('sql', undefined, undefined, Date.now() + 10_000).then(() => null, (e: unknown) => e as InlaidError);
      expect(own?.status).toBe(status.UNAVAILABLE); // the gateway's bound is the sooner here: its 503
    } finally {
      workers.catchUpWaitMs = 30_000;
      conn.holdAdapters(null);
    }
  });

  it('a state that flips the worker to stopping ends the wait at once (no worker accepts work)', async () => {
    conn.holdAdapters(new Set(['sql']));
    const t0 = Date.now();
    const wait = workers.pick('sql').then(() => null, (e: unknown) => e as InlaidError);
    await busySteps(5);
    await busySteps(1, true); // it stops: no worker left to wait for
    const err = await wait;
    expect(err?.status).toBe(status.UNAVAILABLE);
    expect(err?.message).toBe('No inference worker is ready; retry shortly.');
    expect(Date.now() - t0).toBeLessThan(3000); // not the 30 s wait
  });
});
