/**
 * A real Python worker (the tiny fixture, python-worker.ts) and the gateway's own WorkerConnection to it, ready: for
 * suites that drive the worker link directly (no gateway process, no Postgres).
 */
import { rmSync } from 'node:fs';
import { WorkerConnection } from '../../../gateway/src/workers/worker-connection';
import { freePort } from './ports';
import { makeTinyFixture, startWorker } from './python-worker';

export interface ConnectedWorker {
  readonly conn: WorkerConnection;
  /** Stops the connection and the worker, and removes the fixture's copy. */
  close(): Promise<void>;
}

const quiet = { log: () => undefined, warn: () => undefined };

/** Starts a worker and connects to it; rejects if the link is not ready within `readyMs`. */
export async function connectedWorker(readyMs = 10_000): Promise<ConnectedWorker> {
  const fixture = await makeTinyFixture();
  const wk = await startWorker(fixture, await freePort());
  const conn = new WorkerConnection(wk.addr, quiet);
  const close = async (): Promise<void> => {
    conn.stop();
    await wk.kill();
    rmSync(fixture.root, { recursive: true, force: true });
  };
  conn.start();
  const end = Date.now() + readyMs;
  while (!conn.ready && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  if (!conn.ready) {
    await close();
    throw new Error(`the worker at ${wk.addr} was not ready within ${readyMs} ms`);
  }
  return { conn, close };
}
