/**
 * The onboarding specs' stack: a tiny worker that starts serving the base only (no adapters, no checkpoint, so
 * re-quantization is skipped and a task goes active on the current base) behind the real gateway on a fresh
 * Postgres database, with uploads under <fixture>/data.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Harness, startHarness, waitFor } from './gateway-harness';
import { freePort } from './ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './python-worker';

export interface BaseOnlyStack {
  readonly fx: TinyFixture;
  readonly worker: WorkerProcess;
  readonly h: Harness;
  /** The gateway's INLAID_DATA_DIR. */
  readonly dataDir: string;
}

/** Starts the stack with BullMQ queue prefix `queuePrefix` and waits for /readyz; on failure stops what it started. */
export async function startBaseOnlyStack(queuePrefix: string): Promise<BaseOnlyStack> {
  const fx = await makeTinyFixture();
  let worker: WorkerProcess | undefined;
  let h: Harness | undefined;
  try {
    const noAdapters = join(fx.root, 'no-adapters');
    mkdirSync(noAdapters);
    const dataDir = join(fx.root, 'data');
    worker = await startWorker({ ...fx, adaptersDir: noAdapters }, await freePort());
    h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: fx.adaptersDir, INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: queuePrefix });
    const url = h.gateway.httpUrl;
    await waitFor(async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
    return { fx, worker, h, dataDir };
  } catch (err) {
    await worker?.kill();
    await h?.close();
    rmSync(fx.root, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the worker and the gateway, drops the database and removes the fixture (a no-op for undefined). */
export async function stopBaseOnlyStack(stack: BaseOnlyStack | undefined): Promise<void> {
  if (stack === undefined) return;
  await stack.worker.kill();
  await stack.h.close();
  rmSync(stack.fx.root, { recursive: true, force: true });
}
