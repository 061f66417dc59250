import { Client, credentials, Metadata, Server, ServiceError, status } from '@grpc/grpc-js';
import { tasks as proto } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { GrpcServerService } from '../grpc-api/grpc-server.service';
import { bindLocal } from '../testing/local-grpc';
import { parseCreateTask } from './task-input';
import { sloBody, TasksGrpcService } from './tasks-grpc.service';
import type { TasksService } from './tasks.service';

/** The Tasks service on a real grpc-js server (the gate and TasksService stubbed: they are not what is tested). */
describe('TasksGrpcService on malformed messages', () => {
  let server: Server;
  let client: Client;
  const admitted: string[] = [];
  const created: string[] = [];

  beforeAll(async () => {
    server = new Server();
    const host = { addService: (s, impl) => server.addService(s, impl) } as GrpcServerService;
    const gate = { admit: async (auth: string | undefined) => (admitted.push(String(auth)), () => undefined) } as unknown as CallGate;
    // create: the REST parser on the body gRPC builds (the adapter and calibration counted as uploaded: not tested here)
    const create = async (body: { name: string; slo?: unknown }) => {
      created.push(body.name);
      parseCreateTask({ name: body.name, slo: body.slo }, { adapter: true, calibration: true });
      return { job_id: 'j', task: { name: body.name, status: 'onboarding' } };
    };
    const tasks = { get: async (name: string) => ({ name, status: 'ready' }), create } as unknown as TasksService;
    new TasksGrpcService(host, tasks, gate).onModuleInit();
    client = new Client(`127.0.0.1:${await bindLocal(server)}`, credentials.createInsecure());
  });

  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  const getTask = (bytes: Buffer) =>
    new Promise<{ err: ServiceError | null; res?: Buffer }>((resolve) => {
      const id = (b: Buffer) => b;
      client.makeUnaryRequest('/inlaid.v1.Tasks/GetTask', id, id, bytes, new Metadata(), (err, res) => resolve({ err, res }));
    });

  it('answers truncated bytes with INVALID_ARGUMENT (not INTERNAL), and still serves a good message', async () => {
    // field 1 (name), length 5, only 2 bytes follow
    const bad = await getTask(Buffer.from([0x0a, 0x05, 0x61, 0x62]));
    expect(bad.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.err?.details).toMatch(/could not be decoded/);
    expect(admitted).toEqual([]);
    const good = await getTask(Buffer.from([0x0a, 0x02, 0x61, 0x62]));
    expect(good.err).toBeNull();
    expect(good.res?.toString()).toContain('ab');
  });

  const createTaskBytes = (bytes: Buffer) =>
    new Promise<ServiceError | null>((resolve) => {
      const id = (b: Buffer) => b;
      client.makeUnaryRequest('/inlaid.v1.Tasks/CreateTask', id, id, bytes, new Metadata(), (err) => resolve(err));
    });
  const createTask = (slo: proto.Slo) =>
    createTaskBytes(Buffer.from(proto.CreateTaskRequest.encode(proto.CreateTaskRequest.fromPartial({ name: 'sql', adapterPath: '/a', slo })).finish()));

  it('refuses a calibration_jsonl that is not UTF-8 as INVALID_ARGUMENT naming it; nothing is created', async () => {
    const good = Buffer.from(proto.CreateTaskRequest.encode(proto.CreateTaskRequest.fromPartial({ name: 'bad-calib', adapterPath: '/a' })).finish());
    const before = created.length;
    const err = await createTaskBytes(Buffer.concat([good, Buffer.from([(3 << 3) | 2, 2, 0x7b, 0xc3])])); // field 3: "{" and half a character
    expect({ code: err?.code, details: err?.details, param: err?.metadata.get('x-inlaid-param') }).toEqual({
      code: status.INVALID_ARGUMENT,
      details: 'calibration_jsonl must be valid UTF-8.',
      param: ['calibration_jsonl'],
    });
    expect(created.length).toBe(before);
  });

  it.each([
    [{ ttftMs: -5, tpotMs: 0 }, 'slo.ttft_ms'],
    [{ ttftMs: 200, tpotMs: -1 }, 'slo.tpot_ms'],
    [{ ttftMs: NaN, tpotMs: 0 }, 'slo.ttft_ms'],
    [{ ttftMs: 0, tpotMs: Infinity }, 'slo.tpot_ms'],
    [{ ttftMs: 1e-322, tpotMs: 0 }, 'slo.ttft_ms'], // positive, but 0 s once the scheduler divides by 1000
    [{ ttftMs: 0, tpotMs: 2e9 }, 'slo.tpot_ms'],
  ])('refuses slo %j as INVALID_ARGUMENT naming %s, as REST refuses it with 400', async (slo, param) => {
    const err = await createTask(slo);
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.metadata.get('x-inlaid-param')).toEqual([param]);
  });

  it('leaves 0 (proto3 unset) out and passes positive targets', async () => {
    expect(sloBody({ ttftMs: 0, tpotMs: 0 })).toEqual({});
    expect(sloBody({ ttftMs: 250, tpotMs: 0 })).toEqual({ ttft_ms: 250 });
    expect(await createTask({ ttftMs: 250, tpotMs: 20 })).toBeNull();
  });
});
