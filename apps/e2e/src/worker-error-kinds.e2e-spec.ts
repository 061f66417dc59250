/**
 * A worker's refusal reaches the client by the kind the worker names, through a real Python worker (tiny random Llama)
 * and the gateway's own WorkerConnection (no gateway process, no Postgres): an Admit whose token id is outside the
 * vocabulary comes back as a RequestError of kind BAD_INPUT and fails its request with INVALID_ARGUMENT (HTTP 400); a
 * refused Prepare carries its kind in the `inlaid-error-kind` trailing metadata. The gateway holds no pattern of the
 * worker's texts any more: the same text without a kind is a logged 500.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { common, worker } from '@inlaid/proto';
import { Logger } from '@nestjs/common';
import { toOpenAIError } from '../../gateway/src/common/http-mapping';
import { fromWorkerError, InlaidError, WORKER_ERROR_KIND_KEY, workerRequestError } from '../../gateway/src/common/inlaid-error';
import { WorkerConnection } from '../../gateway/src/workers/worker-connection';
import { ConnectedWorker, connectedWorker } from './support/connected-worker';

jest.setTimeout(180_000);

const OUTSIDE = 100_000; // the tiny model's vocabulary has 320 tokens

let connected: ConnectedWorker;
let conn: WorkerConnection;

beforeAll(async () => {
  connected = await connectedWorker();
  conn = connected.conn;
});

afterAll(() => connected?.close());

/**
 * The raw RequestError the worker sends for `admit` on a Session of its own. Fails clearly (and ends the Session)
 * instead of hanging when the request is admitted and finishes, the stream ends or fails, or nothing came in 10 s.
 */
function rawRefusal(admit: worker.Admit): Promise<worker.RequestError> {
  return new Promise((resolve, reject) => {
    const session = conn.rpc.session();
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
      session.cancel();
    };
    const timer = setTimeout(() => settle(() => reject(new Error(`no RequestError for ${admit.requestId} within 10 s`))), 10_000);
    session.on('data', (ev: worker.WorkerEvent) => {
      const kind = ev.kind;
      if (kind?.$case === 'error') settle(() => resolve(kind.value));
      else if (kind?.$case === 'delta' && kind.value.finishReason !== common.FinishReason.FINISH_REASON_UNSPECIFIED) {
        settle(() => reject(new Error(`${admit.requestId} was admitted and finished (${kind.value.finishReason}), not refused`)));
      }
    });
    session.on('end', () => settle(() => reject(new Error(`the Session ended before a RequestError for ${admit.requestId}`))));
    session.on('error', (err: ServiceError) => settle(() => reject(err)));
    session.write({ kind: { $case: 'admit', value: admit } });
  });
}

it('an Admit outside the vocabulary is a BAD_INPUT RequestError and a 400, by its kind', async () => {
  const admit = worker.Admit.fromPartial({ requestId: 'bad-token', model: '', promptTokenIds: [1, OUTSIDE], sampling: { maxTokens: 2 } });
  const raw = await rawRefusal(admit);
  expect(raw.kind).toBe(worker.RequestErrorKind.REQUEST_ERROR_KIND_BAD_INPUT);

  const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
  try {
    let failed: unknown;
    try {
      for await (const _delta of conn.admit({ ...admit, requestId: 'bad-token-2' })) void _delta;
    } catch (err) {
      failed = err;
    }
    expect(failed).toBeInstanceOf(InlaidError);
    const err = failed as InlaidError;
    expect(err.status).toBe(status.INVALID_ARGUMENT);
    expect(toOpenAIError(err)).toMatchObject({ httpStatus: 400, body: { error: { type: 'invalid_request_error', message: raw.message } } });
    expect(logged).not.toHaveBeenCalled();
    // the same text with no kind (an older worker) is not read as bad input: a logged 500
    const unnamed = workerRequestError({ kind: worker.RequestErrorKind.REQUEST_ERROR_KIND_UNSPECIFIED, message: raw.message });
    expect(unnamed.status).toBe(status.INTERNAL);
    expect(logged).toHaveBeenCalledTimes(1);
  } finally {
    logged.mockRestore();
  }
});

it('a refused Prepare names its kind in the trailing metadata', async () => {
  const hot: common.SamplingParams = common.SamplingParams.fromPartial({ maxTokens: 2, temperature: 200 });
  let failed: unknown;
  try {
    await conn.prepare(worker.PrepareRequest.fromPartial({ model: '', prompt: 'hi', sampling: hot }), 10_000);
  } catch (err) {
    failed = err;
  }
  const grpcErr = failed as ServiceError;
  expect(grpcErr.code).toBe(status.INVALID_ARGUMENT);
  expect((grpcErr.metadata as Metadata).get(WORKER_ERROR_KIND_KEY)).toEqual(['REQUEST_ERROR_KIND_BAD_INPUT']);
  const err = fromWorkerError(grpcErr, 'm');
  expect(toOpenAIError(err)).toMatchObject({ httpStatus: 400, body: { error: { type: 'invalid_request_error' } } });
});
