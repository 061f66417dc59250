/**
 * A gRPC Generate's client-chosen request_id is scoped by its API key: two keys may use the same id at once (before, the
 * second got ALREADY_EXISTS, which also told it the other key's id was in use), one key reusing an id still running gets
 * ALREADY_EXISTS naming its own id, and a key cancelling its request never touches another key's with the same id.
 * Real grpc-js server and client, the real CallGate (bootstrap keys), GenerationService, Dispatcher and Scheduler; the
 * worker is a link that records Admits and Aborts (testing/fake-link.ts), its Prepare a stub.
 */
import { credentials, Metadata, Server, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import type { RequestRecord } from '@inlaid/db';
import { common, inference } from '@inlaid/proto';
import { Scheduler } from '@inlaid/scheduling';
import type { DataSource } from 'typeorm';
import { Authenticator } from '../auth/authenticator.service';
import { CallGate } from '../auth/call-gate.service';
import { GenerationService } from '../generation/generation.service';
import type { GenerationInput } from '../generation/generation.types';
import { LimiterService } from '../limits/limiter.service';
import type { RecordsService } from '../records/records.service';
import type { RedisService } from '../redis/redis.service';
import { Dispatcher } from '../scheduling/dispatcher';
import type { SchedulingService } from '../scheduling/scheduling.service';
import { FakeLink, requestOf } from '../testing/fake-link';
import type { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { withMalformedMarker } from './malformed';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';

const KEYS = { a: 'key-tenant-a', b: 'key-tenant-b' } as const;
const TENANT = { a: 'bootstrap:0', b: 'bootstrap:1' } as const; // Authenticator's ids of the bootstrap keys, in order

describe('gRPC request_id, scoped by API key', () => {
  let server: Server;
  let client: InstanceType<typeof inference.InferenceClient>;
  const link = new FakeLink('w');
  const records: RequestRecord[] = [];

  beforeAll(async () => {
    const dispatcher = new Dispatcher(new Scheduler({}), () => performance.now() / 1000, { warn: () => undefined }, ['w']);
    dispatcher.workerUp(link, { id: 'w', kvBlocksTotal: 100, blockSize: 4, maxBatchRows: 8, maxPrefillTokens: 4096 });
    const scheduling = { submit: dispatcher.submit.bind(dispatcher), cancel: dispatcher.cancel.bind(dispatcher) } as unknown as SchedulingService;
    const prepare = () => Promise.resolve({ promptTokenIds: [1, 2], maxTokens: 4 });
    const workers = { pick: () => ({ addr: 'w', prepare }), maxModelLen: () => undefined, toolSupport: () => undefined } as unknown as WorkersService;
    const recorder = { add: (r: RequestRecord) => void records.push(r) } as unknown as RecordsService;
    const generation = new GenerationService(workers, recorder, scheduling);
    const config = { apiKeys: [KEYS.a, KEYS.b], authRequired: true } as unknown as GatewayConfig;
    // bootstrap keys have no limits: neither the key store nor Redis is asked
    const gate = new CallGate(new Authenticator(config, null as unknown as DataSource), new LimiterService(null as unknown as RedisService));
    server = new Server();
    server.addService(withMalformedMarker(inference.InferenceService), inferenceHandlers(generation, workers, gate));
    const port = await bindLocal(server);
    client = new inference.InferenceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  });

  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  interface Outcome {
    readonly err: ServiceError | null;
    readonly ids: string[];
  }

  function generate(tenant: keyof typeof KEYS, requestId: string, n = 1): { call: ClientReadableStream<inference.GenerateResponse>; done: Promise<Outcome> } {
    const md = new Metadata();
    md.set('authorization', `Bearer ${KEYS[tenant]}`);
    const sampling = { maxTokens: 4, stop: [], stopTokenIds: [], ignoreEos: false };
    const req: inference.GenerateRequest = { model: 'sql', prompt: 'hi', messages: [], requestId, sampling, ...(n > 1 ? { n } : {}) };
    const call = client.generate(req, md);
    const ids: string[] = [];
    call.on('data', (m: inference.GenerateResponse) => ids.push(m.requestId));
    const done = new Promise<Outcome>((resolve) => {
      call.on('error', (err: ServiceError) => resolve({ err, ids }));
      call.on('end', () => resolve({ err: null, ids }));
    });
    return { call, done };
  }

  // the worker sees each run of a request as `<id>~r<n>` (scheduling/resume.ts runRequestId)
  const admitted = (id: string) => eventually(() => link.runOf(id) !== undefined, `${id} admitted`);
  const finish = (id: string) => link.emit(id, [5], 1, common.FinishReason.FINISH_REASON_STOP);

  it('two keys may run the same request_id at once; each sees its own id, the worker and records two', async () => {
    const a = generate('a', 'job-1');
    await admitted(`${TENANT.a}/job-1`);
    const b = generate('b', 'job-1');
    await admitted(`${TENANT.b}/job-1`); // before: B got ALREADY_EXISTS
    finish(`${TENANT.b}/job-1`);
    finish(`${TENANT.a}/job-1`);
    expect(await a.done).toEqual({ err: null, ids: ['job-1'] });
    expect(await b.done).toEqual({ err: null, ids: ['job-1'] });
    await eventually(() => records.filter((r) => r.id.endsWith('/job-1')).length === 2, 'both requests recorded');
    expect(records.filter((r) => r.id.endsWith('/job-1')).map((r) => [r.id, r.status]).sort()).toEqual([
      [`${TENANT.a}/job-1`, 'completed'],
      [`${TENANT.b}/job-1`, 'completed'],
    ]);
  });

  it('one key reusing a request_id still running gets ALREADY_EXISTS naming its own id; the first runs on', async () => {
    const first = generate('a', 'job-2');
    await admitted(`${TENANT.a}/job-2`);
    const again = await generate('a', 'job-2').done;
    expect(again.err?.code).toBe(status.ALREADY_EXISTS);
    expect(again.err?.details).toBe('Request id job-2 is already running.'); // before: the internal key was named
    expect(again.err?.metadata.get('x-inlaid-param')).toEqual(['request_id']);
    finish(`${TENANT.a}/job-2`);
    expect(await first.done).toEqual({ err: null, ids: ['job-2'] });
    await eventually(() => records.some((r) => r.id === `${TENANT.a}/job-2`), 'the first recorded');
    // the refusal wrote no row of that id (a request that never ran under it)
    expect(records.filter((r) => r.id === `${TENANT.a}/job-2`).map((r) => r.status)).toEqual(['completed']);
  });

  it("a key cancelling its request with the other key's id aborts only its own", async () => {
    const a = generate('a', 'job-3');
    await admitted(`${TENANT.a}/job-3`);
    const b = generate('b', 'job-3');
    await admitted(`${TENANT.b}/job-3`);
    b.call.cancel();
    expect((await b.done).err?.code).toBe(status.CANCELLED);
    await eventually(() => link.aborts.map(requestOf).includes(`${TENANT.b}/job-3`), "B's run aborted on the worker");
    expect(link.aborts.map(requestOf)).not.toContain(`${TENANT.a}/job-3`);
    finish(`${TENANT.a}/job-3`);
    expect(await a.done).toEqual({ err: null, ids: ['job-3'] });
  });

  it('an id running with n = 2 is refused to the same key at n = 1 (and the reverse), naming the id the client sent', async () => {
    const fan = generate('a', 'job-4', 2);
    await admitted(`${TENANT.a}/job-4#1`);
    const single = await generate('a', 'job-4').done; // before: accepted, a second live stream echoing job-4
    expect(single.err?.code).toBe(status.ALREADY_EXISTS);
    expect(single.err?.details).toBe('Request id job-4 is already running.');
    expect(single.err?.metadata.get('x-inlaid-param')).toEqual(['request_id']);
    const solo = generate('a', 'job-5');
    await admitted(`${TENANT.a}/job-5`);
    expect((await generate('a', 'job-5', 2).done).err?.details).toBe('Request id job-5 is already running.');
    finish(`${TENANT.a}/job-4#0`);
    finish(`${TENANT.a}/job-4#1`);
    finish(`${TENANT.a}/job-5`);
    expect(await fan.done).toEqual({ err: null, ids: ['job-4', 'job-4'] });
    expect(await solo.done).toEqual({ err: null, ids: ['job-5'] });
    expect(link.admits.map((a) => requestOf(a.requestId)).filter((id) => id.startsWith(`${TENANT.a}/job-4`)).sort()).toEqual([
      `${TENANT.a}/job-4#0`,
      `${TENANT.a}/job-4#1`,
    ]);
    // the id is free again once its request ended
    const next = generate('a', 'job-4', 2);
    await admitted(`${TENANT.a}/job-4#0`);
    next.call.cancel();
    expect((await next.done).err?.code).toBe(status.CANCELLED);
  });

  it("a client id that looks like another request's choice runs (before: `X-0` was refused while X ran with n = 2)", async () => {
    const fan = generate('a', 'job-6', 2);
    await admitted(`${TENANT.a}/job-6#0`);
    const lookalike = generate('a', 'job-6-0');
    await admitted(`${TENANT.a}/job-6-0`);
    finish(`${TENANT.a}/job-6-0`);
    expect(await lookalike.done).toEqual({ err: null, ids: ['job-6-0'] });
    finish(`${TENANT.a}/job-6#0`);
    finish(`${TENANT.a}/job-6#1`);
    expect(await fan.done).toEqual({ err: null, ids: ['job-6', 'job-6'] });
  });
});

describe('GenerationService.reserve', () => {
  const none = {} as never;
  const input = (requestId: string, tenant: string): GenerationInput =>
    ({ model: 'sql', prompt: 'hi', messages: [], sampling: { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'grpc', requestId, tenant });

  it("holds a key's id until released (idempotent: a second release frees no later holder's); a tenant holding '/' is a bug", () => {
    const g = new GenerationService(none, none, none);
    const release = g.reserve(input('x', 't1'));
    expect(() => g.reserve(input('x', 't1'))).toThrow('Request id x is already running.');
    g.reserve(input('x', 't2'))();
    release();
    const again = g.reserve(input('x', 't1'));
    release();
    expect(() => g.reserve(input('x', 't1'))).toThrow('Request id x is already running.');
    again();
    expect(() => g.reserve(input('x', 'a/b'))).toThrow("a tenant holds no '/'");
  });
});
