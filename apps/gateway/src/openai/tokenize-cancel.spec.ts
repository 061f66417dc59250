/**
 * A Tokenize / Detokenize whose client goes away ends the worker call it started: gRPC Inference's on the client's
 * cancel or deadline (which the worker call also carries), REST /tokenize and /detokenize on the client's disconnect.
 * Before, the worker call ran on to the gateway's own 15 s deadline. Real grpc-js "worker" server (Tokenize and
 * Detokenize that answer only when told, recording what the worker side sees), a real WorkerClient, the real gRPC
 * handlers and a real Nest HTTP app with TokenizeController; the gate and the WorkersService are stubs.
 */
import 'reflect-metadata';
import { credentials, Metadata, Server, status, type ServerUnaryCall, type sendUnaryData, type ServiceError } from '@grpc/grpc-js';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { common, inference, worker } from '@inlaid/proto';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CallGate } from '../auth/call-gate.service';
import { inferenceHandlers } from '../grpc-api/inference-handlers';
import type { GenerationService } from '../generation/generation.service';
import { WorkersService } from '../workers/workers.service';
import { TokenizeController } from './tokenize.controller';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';

/** One call as the worker saw it. */
interface Seen {
  readonly at: number;
  readonly deadline: number;
  cancelledAt?: number;
  answer(): void;
}

/** A worker whose Tokenize and Detokenize wait until the test answers them, noting their deadline and cancellation. */
async function startWorker() {
  const seen: Seen[] = [];
  const hold = <Req, Res>(res: Res) => (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
    const d = call.getDeadline();
    const s: Seen = { at: Date.now(), deadline: d instanceof Date ? d.getTime() : d, answer: () => cb(null, res) };
    call.on('cancelled', () => (s.cancelledAt ??= Date.now()));
    seen.push(s);
  };
  const server = new Server();
  server.addService(worker.WorkerService, {
    tokenize: hold<worker.TokenizeRequest, common.TokenizeResponse>({ tokenIds: [1, 2], maxModelLen: 8, tokenStrs: [] }),
    detokenize: hold<common.DetokenizeRequest, common.DetokenizeResponse>({ prompt: 'ab' }),
  });
  const port = await bindLocal(server);
  const rpc = new worker.WorkerClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const workers = { pick: () => ({ rpc }), toolSupport: () => undefined, listModels: () => [{ id: 'base', parent: '' }] } as unknown as WorkersService;
  return { server, rpc, workers, seen };
}

const GATE = { admit: () => Promise.resolve(() => undefined) } as unknown as CallGate;
/** How soon a cancellation reaches the worker call: well before the 15 s deadline it ran to before, with room for a loaded 2-core machine. */
const PROMPTLY_MS = 5000;

jest.setTimeout(4 * PROMPTLY_MS);

describe('Tokenize and Detokenize end their worker call with their client', () => {
  let w: Awaited<ReturnType<typeof startWorker>>;
  let grpcServer: Server;
  let client: InstanceType<typeof inference.InferenceClient>;
  let app: INestApplication;
  let httpPort: number;

  beforeAll(async () => {
    w = await startWorker();
    grpcServer = new Server();
    grpcServer.addService(inference.InferenceService, inferenceHandlers({} as GenerationService, w.workers, GATE));
    const port = await bindLocal(grpcServer);
    client = new inference.InferenceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const moduleRef = await Test.createTestingModule({ controllers: [TokenizeController], providers: [{ provide: WorkersService, useValue: w.workers }] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    httpPort = (app.getHttpServer().address() as AddressInfo).port;
  });

  afterAll(async () => {
    client?.close();
    w?.rpc.close();
    grpcServer?.forceShutdown();
    w?.server.forceShutdown();
    await app?.close();
  });

  const TOKENIZE: inference.TokenizeTextRequest = { model: 'base', prompt: 'hi', messages: [], returnTokenStrs: false };
  const DETOKENIZE: common.DetokenizeRequest = { model: 'base', tokenIds: [1, 2] };
  const grpcCall = (method: 'tokenize' | 'detokenize', deadline?: number) => {
    let result: ServiceError | null | undefined;
    const options = deadline === undefined ? {} : { deadline };
    const cb = (err: ServiceError | null) => void (result = err);
    const call = method === 'tokenize' ? client.tokenize(TOKENIZE, new Metadata(), options, cb) : client.detokenize(DETOKENIZE, new Metadata(), options, cb);
    return { call, result: () => result };
  };

  it.each(['tokenize', 'detokenize'] as const)('gRPC %s: the client cancelling cancels the worker call at once', async (method) => {
    const before = w.seen.length;
    const { call, result } = grpcCall(method);
    await eventually(() => w.seen.length === before + 1, 'the worker is asked');
    const cancelledAt = Date.now();
    call.cancel();
    const s = w.seen[before] as Seen;
    // before: the worker call ran on until the gateway's 15 s deadline
    await eventually(() => s.cancelledAt !== undefined, 'the worker sees the cancellation', PROMPTLY_MS);
    expect((s.cancelledAt as number) - cancelledAt).toBeLessThan(PROMPTLY_MS);
    await eventually(() => result() !== undefined, 'the client has its status');
    expect(result()?.code).toBe(status.CANCELLED);
  });

  it("gRPC tokenize: the worker call carries the client's deadline and ends with it", async () => {
    const before = w.seen.length;
    const deadline = Date.now() + 400;
    const { result } = grpcCall('tokenize', deadline);
    await eventually(() => w.seen.length === before + 1, 'the worker is asked');
    const s = w.seen[before] as Seen;
    expect(s.deadline).toBeLessThanOrEqual(deadline + 2000); // before: the gateway's own, 15 s away (slack: a loaded machine)
    await eventually(() => s.cancelledAt !== undefined, 'the worker call ends at the deadline', PROMPTLY_MS);
    await eventually(() => result() !== undefined, 'the client has its status');
    expect(result()?.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it('gRPC tokenize: a call its client keeps is answered as before', async () => {
    const before = w.seen.length;
    const { result } = grpcCall('tokenize');
    await eventually(() => w.seen.length === before + 1, 'the worker is asked');
    const s = w.seen[before] as Seen;
    s.answer();
    await eventually(() => result() !== undefined, 'the answer');
    expect(result()).toBeNull();
  });

  /** POSTs `body` to `path`; `leave`: the client disconnects once the worker was asked instead of reading the answer. */
  function post(path: string, body: unknown, leave: boolean): Promise<{ status?: number; text?: string }> {
    const before = w.seen.length;
    return new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: httpPort, path, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode, text }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => (leave ? resolve({}) : reject(err)));
      req.end(JSON.stringify(body));
      void eventually(() => w.seen.length === before + 1, 'the worker is asked').then(() => {
        if (leave) req.destroy();
        else w.seen[before]?.answer();
      }, reject);
    });
  }

  it.each([
    ['/tokenize', { model: 'base', prompt: 'hi' }],
    ['/detokenize', { model: 'base', tokens: [1, 2] }],
  ])('REST %s: the client disconnecting cancels the worker call', async (path, body) => {
    const before = w.seen.length;
    const disconnectedAt = Date.now();
    await post(path, body, true);
    const s = w.seen[before] as Seen;
    await eventually(() => s.cancelledAt !== undefined, 'the worker sees the cancellation', PROMPTLY_MS); // before: 15 s later
    expect((s.cancelledAt as number) - disconnectedAt).toBeLessThan(PROMPTLY_MS);
  });

  it('REST /tokenize: a client that stays gets its answer', async () => {
    const r = await post('/tokenize', { model: 'base', prompt: 'hi' }, false);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text ?? '')).toEqual({ count: 2, max_model_len: 8, tokens: [1, 2] });
  });
});
