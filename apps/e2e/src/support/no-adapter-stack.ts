/**
 * What the base-only (tiny model) and SmolLM2 stacks share: a worker started with an empty adapters dir
 * (<root>/no-adapters) behind the real gateway on a fresh Postgres database (its INLAID_DATA_DIR <root>/data), /readyz
 * answered, and the base model's id from /v1/models. Stopping kills the worker, closes the gateway (dropping its
 * database) and removes <root>.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Harness, startHarness, waitFor } from './gateway-harness';
import { WorkerProcess } from './python-worker';

export interface NoAdapterStack {
  /** The temp dir that holds everything the stack writes (removed at stop). */
  readonly root: string;
  readonly worker: WorkerProcess;
  readonly h: Harness;
  /** The gateway's HTTP base URL. */
  readonly url: string;
  /** The gateway's INLAID_DATA_DIR. */
  readonly dataDir: string;
  /** The base model's id (the /v1/models entry without a parent). */
  readonly base: string;
}

export interface NoAdapterStackOptions {
  /** An existing temp dir; it is removed if the start fails. */
  readonly root: string;
  /** Starts the worker with `adaptersDir` (empty) as its adapters dir. */
  readonly startWorker: (adaptersDir: string) => Promise<WorkerProcess>;
  /** The gateway's INLAID_ADAPTER_ROOT (default: the worker's empty adapters dir). */
  readonly adapterRoot?: string;
  /** BullMQ queue prefix. */
  readonly queuePrefix: string;
  readonly readyTimeoutMs: number;
}

/** Starts the stack and waits for /readyz; on failure stops what it started and removes `root`. */
export async function startNoAdapterStack(o: NoAdapterStackOptions): Promise<NoAdapterStack> {
  let worker: WorkerProcess | undefined;
  let h: Harness | undefined;
  try {
    const adaptersDir = join(o.root, 'no-adapters');
    mkdirSync(adaptersDir);
    const dataDir = join(o.root, 'data');
    worker = await o.startWorker(adaptersDir);
    h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: o.adapterRoot ?? adaptersDir, INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: o.queuePrefix });
    const url = h.gateway.httpUrl;
    await waitFor(async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined), o.readyTimeoutMs, 'readyz');
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string; parent: string | null }> };
    const base = (models.data.find((m) => m.parent === null) as { id: string }).id;
    return { root: o.root, worker, h, url, dataDir, base };
  } catch (err) {
    await worker?.kill();
    await h?.close();
    rmSync(o.root, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the worker and the gateway (dropping its database) and removes the temp dir (a no-op for undefined). */
export async function stopNoAdapterStack(stack: NoAdapterStack | undefined): Promise<void> {
  if (stack === undefined) return;
  await stack.worker.kill();
  await stack.h.close();
  rmSync(stack.root, { recursive: true, force: true });
}
