/**
 * A request id reused right after its cancel, on a real Python worker (tiny random Llama) through the gateway's own
 * Dispatcher, Scheduler and WorkerConnection (no gateway process, no Postgres). The worker frees an aborted id only at
 * its next step: an Admit of the same id sent right after the Abort was refused INTERNAL ("request id 'x' is already in
 * flight"), and the aborted run's last delta (finish `abort`, the old run's token count) reached the new request under
 * that id: a 500 for a client that retried at once. Every run now has a worker-side id of its own (resume.ts).
 */
import { common } from '@inlaid/proto';
import { Scheduler } from '@inlaid/scheduling';
import { Dispatcher } from '../../gateway/src/scheduling/dispatcher';
import type { PreparedRequest } from '../../gateway/src/scheduling/resume';
import type { Ticket, TicketEvent } from '../../gateway/src/scheduling/ticket';
import type { WorkerConnection } from '../../gateway/src/workers/worker-connection';
import { ConnectedWorker, connectedWorker } from './support/connected-worker';

jest.setTimeout(180_000);

let worker: ConnectedWorker;
let conn: WorkerConnection;

beforeAll(async () => {
  worker = await connectedWorker();
  conn = worker.conn;
});

afterAll(() => worker?.close());

const request = (maxTokens: number): PreparedRequest => ({
  id: 'tenant/job',
  model: '',
  promptTokenIds: [1, 2, 3, 4],
  sampling: common.SamplingParams.fromPartial({ maxTokens, ignoreEos: true }),
});

/** Reads `t` until its first delta: the request is then running on the worker. */
async function firstDelta(t: Ticket): Promise<void> {
  for await (const e of t.events) if (e.kind === 'delta') return;
  throw new Error('the request ended before its first delta');
}

async function drain(t: Ticket): Promise<TicketEvent[]> {
  const out: TicketEvent[] = [];
  for await (const e of t.events) out.push(e);
  return out;
}

it('runs a request id again right after its cancel (before: the aborted run\'s end reached it, then INTERNAL)', async () => {
  const d = new Dispatcher(new Scheduler({ policy: 'fifo' }), () => performance.now() / 1000, { warn: () => undefined }, [conn.addr]);
  d.workerUp(conn, { id: conn.addr, kvBlocksTotal: 64, blockSize: 16, maxBatchRows: 8, maxPrefillTokens: 4096 });
  for (let i = 0; i < 3; i++) {
    const running = d.submit(request(500), 'base', undefined);
    await firstDelta(running);
    d.cancel('tenant/job'); // the client left: Abort sent; the same id comes back at once
    const again = drain(d.submit(request(3), 'base', undefined));
    const deltas = (await again).flatMap((e) => (e.kind === 'delta' ? [e.delta] : []));
    const last = deltas[deltas.length - 1];
    expect(last).toMatchObject({ requestId: 'tenant/job', completionTokens: 3, finishReason: common.FinishReason.FINISH_REASON_LENGTH });
  }
});
