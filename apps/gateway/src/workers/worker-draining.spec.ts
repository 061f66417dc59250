/**
 * A worker that says it is stopping (WorkerState.draining on its Session, sent as soon as it refuses new Admits) gets
 * no new work from WorkersService: pick and hasReadyOutside skip it, listModels and toolSupport leave its models out,
 * while its link stays up for the requests it still runs. Before, the gateway learned of the stop only when the worker
 * refused a run (SHUTTING_DOWN): Prepares (a grammar compile may take 10 s) kept going to it, and listModels listed
 * models that submit then said no worker was ready for. Real grpc-js fake workers (GetInfo + Session).
 */
import { Server, type ServerDuplexStream } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import { WorkersService } from './workers.service';

type Session = ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>;

/** A worker serving base `m` and adapter `own`, with the tool parser `parser`; `sessions` holds its open Sessions. */
async function fakeWorker(own: string, parser: string): Promise<{ server: Server; addr: string; sessions: Session[] }> {
  const server = new Server();
  const sessions: Session[] = [];
  const models = [{ id: 'm', parent: '' }, { id: own, parent: 'm' }];
  const getInfo = (_call: unknown, cb: (e: null, r: worker.WorkerInfo) => void) =>
    cb(null, worker.WorkerInfo.fromPartial({ workerId: own, baseModel: 'm', models, toolCallParser: parser, nativeTools: true }));
  const session = (call: Session) => {
    sessions.push(call);
    call.on('error', () => undefined);
  };
  server.addService(worker.WorkerService, { getInfo, session } as unknown as worker.WorkerServer);
  return { server, addr: `127.0.0.1:${await bindLocal(server)}`, sessions };
}

describe('WorkersService: a worker whose state says it is stopping', () => {
  let a: Awaited<ReturnType<typeof fakeWorker>>;
  let b: Awaited<ReturnType<typeof fakeWorker>>;
  let workers: WorkersService;

  beforeAll(async () => {
    [a, b] = await Promise.all([fakeWorker('a-only', 'hermes'), fakeWorker('b-only', 'llama3_json')]);
    workers = new WorkersService({ workerAddrs: [a.addr, b.addr], workerTls: null } as unknown as GatewayConfig);
    workers.onModuleInit();
    await eventually(() => workers.readyConnections().length === 2 && a.sessions.length === 1 && b.sessions.length === 1, 'both links up', 3000);
  });

  afterAll(() => {
    workers?.onModuleDestroy();
    a?.server.forceShutdown();
    b?.server.forceShutdown();
  });

  const tell = (w: Awaited<ReturnType<typeof fakeWorker>>, draining: boolean): void => {
    w.sessions[0]?.write({ kind: { $case: 'state', value: worker.WorkerState.fromPartial({ workerId: 'x', draining }) } });
  };
  const ids = (): string[] => workers.listModels().map((m) => m.id);

  it('gets no new work once its state says so, though its link stays up', async () => {
    expect(workers.pick('m').addr).toBe(a.addr); // both idle: the first configured
    expect(ids()).toEqual(['m', 'a-only', 'b-only']);
    expect(workers.anyReady).toBe(true);
    expect(workers.toolSupport('m').parser).toBe('hermes');

    tell(a, true);
    await eventually(() => workers.pick('m').addr === b.addr, 'pick skips the stopping worker'); // before: a, until a run was refused
    expect(workers.pick('a-only').addr).toBe(b.addr); // its adapter too: b's Prepare answers for it
    expect(workers.hasReadyOutside(new Set([b.addr]))).toBe(false); // a Prepare that failed on b is not retried on a
    expect(ids()).toEqual(['m', 'b-only']); // as submit sees it: a's own adapter is not listed
    expect(workers.toolSupport('m').parser).toBe('llama3_json');
    expect(workers.readyConnections().map((c) => c.addr).sort()).toEqual([a.addr, b.addr].sort()); // still linked: its runs go on

    tell(b, true);
    await eventually(() => !workers.hasReadyOutside(new Set()), 'no worker accepts work');
    expect(() => workers.pick('m')).toThrow(InlaidError);
    expect(() => workers.listModels()).toThrow('No inference worker is ready; retry shortly.'); // as submit says
    expect(workers.anyReady).toBe(false); // /readyz: only stopping workers left

    tell(a, false);
    tell(b, false);
    await eventually(() => workers.hasReadyOutside(new Set()), 'a state without draining: accepting again');
    expect(workers.anyReady).toBe(true);
  });
});
