/**
 * A worker that says it is stopping (WorkerState.draining on its Session, sent as soon as it refuses new Admits) gets
 * no new work from WorkersService: pick and hasReadyOutside skip it, listModels and toolSupport leave its models out,
 * while its link stays up for the requests it still runs. Before, the gateway learned of the stop only when the worker
 * refused a run (SHUTTING_DOWN): Prepares (a grammar compile may take 10 s) kept going to it, and listModels listed
 * models that submit then said no worker was ready for. The stop is one-way for the Session: a later state without the
 * flag (published before it, or read by refreshInfo from a GetInfo that had not seen it) does not make the worker
 * accept again; a new Session (a restarted worker) starts from GetInfo's state. Admin calls (validate, load, unload)
 * skip it too. Real grpc-js fake workers (GetInfo, Session, the adapter admin calls).
 */
import { Server, type ServerDuplexStream } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import { WorkerAdminService } from '../tasks/worker-admin.service';
import { WorkersService } from './workers.service';

type Session = ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>;

interface FakeWorker {
  server: Server;
  addr: string;
  sessions: Session[];
  /** The admin calls it got (`validate x`, `load x`, `unload x`). */
  admin: string[];
  /** What its GetInfo's state says. */
  infoDraining: boolean;
}

/** A worker serving base `m` and adapter `own`, with the tool parser `parser`; `sessions` holds its Sessions, the last the open one. */
async function fakeWorker(own: string, parser: string): Promise<FakeWorker> {
  const server = new Server();
  const w: FakeWorker = { server, addr: '', sessions: [], admin: [], infoDraining: false };
  const models = [{ id: 'm', parent: '' }, { id: own, parent: 'm' }];
  const getInfo = (_call: unknown, cb: (e: null, r: worker.WorkerInfo) => void) =>
    cb(null, worker.WorkerInfo.fromPartial({ workerId: own, baseModel: 'm', models, toolCallParser: parser, nativeTools: true, state: { workerId: own, draining: w.infoDraining } }));
  const session = (call: Session) => {
    w.sessions.push(call);
    call.on('error', () => undefined);
  };
  const adminCall = (what: string) => (call: { request: { name: string } }, cb: (e: null, r: object) => void) => {
    w.admin.push(`${what} ${call.request.name}`);
    cb(null, what === 'unload' ? worker.UnloadAdapterResponse.fromPartial({}) : common.ModelCard.fromPartial({ id: call.request.name, parent: 'm' }));
  };
  const handlers = { getInfo, session, validateAdapter: adminCall('validate'), loadAdapter: adminCall('load'), unloadAdapter: adminCall('unload') };
  server.addService(worker.WorkerService, handlers as unknown as worker.WorkerServer);
  w.addr = `127.0.0.1:${await bindLocal(server)}`;
  return w;
}

describe('WorkersService: a worker whose state says it is stopping', () => {
  let a: FakeWorker;
  let b: FakeWorker;
  let workers: WorkersService;
  let admin: WorkerAdminService;

  beforeAll(async () => {
    [a, b] = await Promise.all([fakeWorker('a-only', 'hermes'), fakeWorker('b-only', 'llama3_json')]);
    workers = new WorkersService({ workerAddrs: [a.addr, b.addr], workerTls: null } as unknown as GatewayConfig);
    workers.onModuleInit();
    admin = new WorkerAdminService(workers);
    await eventually(() => workers.readyConnections().length === 2 && a.sessions.length === 1 && b.sessions.length === 1, 'both links up', 3000);
  });

  afterAll(() => {
    workers?.onModuleDestroy();
    a?.server.forceShutdown();
    b?.server.forceShutdown();
  });

  const tell = (w: FakeWorker, draining: boolean): void => {
    w.sessions.at(-1)?.write({ kind: { $case: 'state', value: worker.WorkerState.fromPartial({ workerId: 'x', draining }) } });
  };
  const ids = (): string[] => workers.listModels().map((m) => m.id);

  it('gets no new work once its state says so, though its link stays up', async () => {
    expect((await workers.pick('m')).addr).toBe(a.addr); // both idle: the first configured
    expect(ids()).toEqual(['m', 'a-only', 'b-only']);
    expect(workers.anyReady).toBe(true);
    expect(workers.toolSupport('m').parser).toBe('hermes');

    tell(a, true);
    await eventually(() => workers.acceptingConnections().every((c) => c.addr === b.addr), 'a stopping');
    expect((await workers.pick('m')).addr).toBe(b.addr); // pick skips the stopping worker (before: a, until a run was refused)
    expect((await workers.pick('a-only')).addr).toBe(b.addr); // its adapter too: b's Prepare answers for it
    expect(workers.hasReadyOutside(new Set([b.addr]))).toBe(false); // a Prepare that failed on b is not retried on a
    expect(ids()).toEqual(['m', 'b-only']); // as submit sees it: a's own adapter is not listed
    expect(workers.toolSupport('m').parser).toBe('llama3_json');
    expect(workers.readyConnections().map((c) => c.addr).sort()).toEqual([a.addr, b.addr].sort()); // still linked: its runs go on
  });

  it('gets no admin calls: validate goes to an accepting worker, load and unload skip it', async () => {
    const card = await admin.validate('sql', '/adapters/sql');
    expect(card.id).toBe('sql');
    expect(a.admin).toEqual([]); // before: a (the first ready), refusing it in its shutdown grace (POST /v1/tasks a 503)
    expect(b.admin).toEqual(['validate sql']);
    await admin.loadEverywhere('sql', '/adapters/sql');
    await admin.unloadEverywhere('sql');
    expect(a.admin).toEqual([]);
    expect(b.admin).toEqual(['validate sql', 'load sql', 'unload sql']);
  });

  it('stays stopping for its Session: later states and GetInfo without the flag do not undo it', async () => {
    tell(b, true);
    await eventually(() => !workers.hasReadyOutside(new Set()), 'no worker accepts work');
    await expect(workers.pick('m')).rejects.toThrow(InlaidError);
    expect(() => workers.listModels()).toThrow('No inference worker is ready; retry shortly.'); // as submit says
    expect(workers.anyReady).toBe(false); // /readyz: only stopping workers left
    await expect(admin.validate('sql', '/adapters/sql')).rejects.toThrow('No inference worker is ready; retry shortly.');

    tell(a, false); // e.g. a state the worker published before it began refusing
    tell(b, false);
    const conn = workers.readyConnections().find((c) => c.addr === a.addr);
    await conn?.refreshInfo(); // GetInfo says draining=false (infoDraining): the state it carries does not undo it either
    await eventually(() => conn?.latestState?.draining === false && workers.readyConnections().every((c) => c.latestState?.draining === false), 'states read');
    expect(workers.hasReadyOutside(new Set())).toBe(false); // before: accepting again
    expect(workers.anyReady).toBe(false);
    expect(workers.readyConnections()).toHaveLength(2); // linked still: their runs go on
  });

  it('a new Session starts from GetInfo: a restarted worker accepts again, one restarted stopping does not', async () => {
    b.infoDraining = true;
    a.sessions.at(-1)?.end(); // the links drop (the workers restarted): each reconnects with a new Session
    b.sessions.at(-1)?.end();
    await eventually(() => a.sessions.length === 2 && b.sessions.length === 2 && workers.readyConnections().length === 2, 'both linked again', 3000);
    expect(workers.acceptingConnections().map((c) => c.addr)).toEqual([a.addr]);

    const conn = workers.readyConnections().find((c) => c.addr === a.addr);
    a.infoDraining = true;
    await conn?.refreshInfo(); // after an admin call: GetInfo's state says draining
    expect(conn?.accepting).toBe(false);
  });
});
