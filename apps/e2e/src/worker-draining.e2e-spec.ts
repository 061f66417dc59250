/**
 * A real Python worker told to stop (SIGTERM: RunningWorker.stop, refuse_new, then the server's 5 s grace) says so on
 * the Session at once (WorkerState.draining), and the gateway's own WorkerConnection stops taking new work for it
 * (accepting: what WorkersService.pick, listModels and the dispatcher read) while its link is still up. Before, the
 * gateway learned of the stop only from a refused run (SHUTTING_DOWN), and sent Prepares there until then.
 *
 * This suite's flake (no event within 10 s of SIGTERM, about one run in 30) was a missed SIGTERM, not a late state: the
 * kernel may deliver it to any thread, and one that landed on a gRPC, engine-loop or torch thread left the main thread
 * blocked in threading.Event().wait(), so the worker never began to drain. The main thread now waits on Python's
 * signal wakeup fd (workers/inlaid_worker/server/stop_signal.py; test_stop_signal.py sends it to another thread). The
 * state was never late here: this worker is idle, and an idle loop published it within about 1 ms; only mid-step, under
 * load, did it take 0.5-1.8 s, and refuse_new now publishes it itself (bench/results/draining-latency-2026-12-01.md).
 */
import { rmSync } from 'node:fs';
import { eventually as until } from '../../gateway/src/testing/eventually';
import { WorkerConnection } from '../../gateway/src/workers/worker-connection';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, type TinyFixture, type WorkerProcess } from './support/python-worker';

jest.setTimeout(180_000);

const quiet = { log: () => undefined, warn: () => undefined };

let fixture: TinyFixture;
let wk: WorkerProcess;
let conn: WorkerConnection;
/** A state came over the Session: the worker's Session handler runs (its first message is the latest state). */
let sessionOpen = false;

beforeAll(async () => {
  fixture = await makeTinyFixture();
  wk = await startWorker(fixture, await freePort());
  conn = new WorkerConnection(wk.addr, quiet);
  conn.watch((_c, event) => {
    if (event === 'state') sessionOpen = true;
  });
  conn.start();
});

afterAll(async () => {
  conn?.stop();
  await wk?.kill();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

it('a stopping worker is no longer accepting as soon as it refuses, its link still up', async () => {
  // the link is up as soon as the gateway opened its Session stream; wait for the worker's first state on it too: a
  // SIGTERM before the worker's handler ran stops the server with the RPC not yet started, and the link then goes down
  // with no state (CI, session 22: 'down' first, once; a race of this test, not of the drain)
  await until(() => conn.ready && sessionOpen, 'the link is up and its Session open on the worker', 10_000);
  expect(conn.accepting).toBe(true);
  expect(conn.latestState?.draining).toBe(false);
  // what the link saw, in order, recorded as it happened (polling could miss the window on a loaded machine)
  const seen: string[] = [];
  conn.watch((c, event) => {
    if (event === 'down') seen.push('down');
    else if (event === 'state' && c.latestState?.draining === true) seen.push(`draining (ready ${c.ready}, accepting ${c.accepting})`);
  });
  process.kill(wk.pid, 'SIGTERM');
  await until(() => seen.length > 0, 'the worker says it is draining', 30_000); // before: never, until a run was refused
  // the state came on the Session while it was up (and any run on it went on), and it stopped new work at once
  expect(seen[0]).toBe('draining (ready true, accepting false)');
  await until(() => !conn.ready, 'the link goes down once the grace ends', 30_000);
});
