/**
 * Prepare's retry on another worker (GenerationService.prepare), over real grpc-js servers standing in for workers: a
 * worker that names itself shutting down (the `inlaid-error-kind` trailing metadata) is left for the next one; a
 * retry's NOT_FOUND (that worker lacks the adapter: the retry does not look at models) gives the first failure back;
 * a worker's other refusals are never retried.
 */
import { Metadata, Server, type ServerUnaryCall, type ServiceError, status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { InlaidError, WORKER_ERROR_KIND_KEY } from '../common/inlaid-error';
import type { RecordsService } from '../records/records.service';
import type { SchedulingService } from '../scheduling/scheduling.service';
import { bindLocal } from '../testing/local-grpc';
import { logSpies } from '../testing/log-spies';
import { WorkerConnection } from '../workers/worker-connection';
import type { WorkersService } from '../workers/workers.service';
import { GenerationService } from './generation.service';
import type { GenerationInput } from './generation.types';

type Answer = { kind: string; code: status; text: string } | 'prepared';
type Callback = (err: Partial<ServiceError> | null, res?: worker.PrepareResponse) => void;

/** A worker whose Prepare answers `answer()` (a refusal naming its kind, or a prepared prompt), counting its calls. */
async function fakeWorker(answer: () => Answer): Promise<{ server: Server; conn: WorkerConnection; calls: () => number }> {
  let calls = 0;
  const prepare = (_call: ServerUnaryCall<worker.PrepareRequest, worker.PrepareResponse>, cb: Callback): void => {
    calls += 1;
    const a = answer();
    if (a === 'prepared') return cb(null, worker.PrepareResponse.fromPartial({ promptTokenIds: [7, 8], maxTokens: 2 }));
    const metadata = new Metadata();
    metadata.set(WORKER_ERROR_KIND_KEY, a.kind);
    cb({ code: a.code, details: a.text, metadata });
  };
  const server = new Server();
  server.addService(worker.WorkerService, { prepare } as unknown as worker.WorkerServer);
  const port = await bindLocal(server);
  return { server, conn: new WorkerConnection(`127.0.0.1:${port}`, { log: () => undefined, warn: () => undefined }), calls: () => calls };
}

const SHUTTING_DOWN: Answer = { kind: 'REQUEST_ERROR_KIND_SHUTTING_DOWN', code: status.UNAVAILABLE, text: 'the grammar cache is closed' };
const NO_ADAPTER: Answer = { kind: 'REQUEST_ERROR_KIND_UNKNOWN_MODEL', code: status.NOT_FOUND, text: "the model 'sql' does not exist" };
const BAD_INPUT: Answer = { kind: 'REQUEST_ERROR_KIND_BAD_INPUT', code: status.INVALID_ARGUMENT, text: 'temperature: 200 is too high' };

const input: GenerationInput = {
  model: 'sql', prompt: 'hi', messages: [], sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'completions',
};

describe('Prepare on a worker that refuses it', () => {
  const answers: [Answer, Answer] = ['prepared', 'prepared'];
  let workers: Array<Awaited<ReturnType<typeof fakeWorker>>>;
  logSpies(); // the refusals' warnings

  beforeAll(async () => {
    workers = [await fakeWorker(() => answers[0]), await fakeWorker(() => answers[1])];
  });
  afterAll(() => {
    for (const w of workers ?? []) {
      w.conn.stop();
      w.server.forceShutdown();
    }
  });

  /** A service over the two workers (the first picked first), and its scheduler's submit. */
  function service(waitsOnRetry = false) {
    const conns = workers.map((w) => w.conn);
    // waitsOnRetry: the second worker is still catching up on the model, and the retry's wait for it ends in a 503
    const pick = async (_model: string, tried: ReadonlySet<string>) => {
      if (waitsOnRetry && tried.size > 0) throw InlaidError.unavailable('The model is still being loaded onto the workers; retry shortly.');
      return conns.find((c) => !tried.has(c.addr)) as WorkerConnection;
    };
    const hasReadyOutside = (tried: ReadonlySet<string>) => conns.some((c) => !tried.has(c.addr));
    const submit = jest.fn(() => ({ admitted: Promise.resolve(conns[1].addr), events: (async function* () {})() }));
    const g = new GenerationService(
      { pick, hasReadyOutside } as unknown as WorkersService,
      { add: jest.fn() } as unknown as RecordsService,
      { submit, cancel: jest.fn() } as unknown as SchedulingService,
    );
    return { g, submit };
  }

  const callsOf = () => workers.map((w) => w.calls());

  it('as shutting down: tries the next worker', async () => {
    answers.splice(0, 2, SHUTTING_DOWN, 'prepared');
    const before = callsOf();
    const { g, submit } = service();
    const generation = await g.start(input);
    expect(callsOf().map((n, i) => n - before[i])).toEqual([1, 1]);
    expect(submit).toHaveBeenCalledWith(expect.objectContaining({ promptTokenIds: [7, 8] }), 'sql', 'hi');
    generation.abort('done');
  });

  it("as shutting down, then NOT_FOUND on the retry (a worker without the adapter): the first refusal, a 503, not a 404", async () => {
    answers.splice(0, 2, SHUTTING_DOWN, NO_ADAPTER);
    const { g, submit } = service();
    await expect(g.start(input)).rejects.toMatchObject({ status: status.UNAVAILABLE, message: expect.stringMatching(/shutting down/) });
    expect(submit).not.toHaveBeenCalled();
  });

  it("as shutting down, then the retry's wait for a worker catching up ends in a 503: the first refusal is the answer", async () => {
    answers.splice(0, 2, SHUTTING_DOWN, 'prepared');
    const before = callsOf();
    const { g, submit } = service(true);
    const err = await g.start(input).then(() => null, (e: unknown) => e as InlaidError);
    expect(err?.status).toBe(status.UNAVAILABLE);
    expect(err?.message).toMatch(/shutting down/); // before: 'The model is still being loaded onto the workers; ...'
    expect(callsOf().map((n, i) => n - before[i])).toEqual([1, 0]);
    expect(submit).not.toHaveBeenCalled();
  });

  it("as bad input: not retried, a 400 with the worker's text", async () => {
    answers.splice(0, 2, BAD_INPUT, 'prepared');
    const before = callsOf();
    const { g } = service();
    await expect(g.start(input)).rejects.toMatchObject({ status: status.INVALID_ARGUMENT, message: BAD_INPUT.text });
    expect(callsOf().map((n, i) => n - before[i])).toEqual([1, 0]);
  });
});
