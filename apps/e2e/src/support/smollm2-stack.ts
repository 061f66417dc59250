/**
 * The real-model specs' stack: the worker serving the default model (SmolLM2-135M-Instruct, `--model smollm2`) with
 * no adapters behind the real gateway on a fresh Postgres database, and the base model's id from /v1/models.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, startHarness, waitFor } from './gateway-harness';
import { freePort } from './ports';
import { startWorker, WorkerProcess } from './python-worker';

export interface SmolStack {
  readonly root: string;
  readonly worker: WorkerProcess;
  readonly h: Harness;
  /** The gateway's HTTP base URL. */
  readonly url: string;
  /** The base model's id (the /v1/models entry without a parent). */
  readonly base: string;
}

/** Starts the stack (BullMQ prefix `queuePrefix`, temp dir `inlaid-e2e-<name>-*`, extra worker flags) and waits for
 * /readyz; on failure stops what it started. */
export async function startSmolStack(name: string, queuePrefix: string, workerArgs: string[] = []): Promise<SmolStack> {
  const root = mkdtempSync(join(tmpdir(), `inlaid-e2e-${name}-`));
  let worker: WorkerProcess | undefined;
  let h: Harness | undefined;
  try {
    const adaptersDir = join(root, 'no-adapters');
    mkdirSync(adaptersDir);
    worker = await startWorker({ root, modelDir: 'smollm2', adaptersDir, adapters: [] }, await freePort(), 180_000, workerArgs);
    h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: adaptersDir, INLAID_DATA_DIR: join(root, 'data'), INLAID_QUEUE_PREFIX: queuePrefix });
    const url = h.gateway.httpUrl;
    await waitFor(async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined), 30_000, 'readyz');
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string; parent: string | null }> };
    const base = (models.data.find((m) => m.parent === null) as { id: string }).id;
    return { root, worker, h, url, base };
  } catch (err) {
    await worker?.kill();
    await h?.close();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the worker and the gateway and removes the temp dir (a no-op for undefined). */
export async function stopSmolStack(stack: SmolStack | undefined): Promise<void> {
  if (stack === undefined) return;
  await stack.worker.kill();
  await stack.h.close();
  rmSync(stack.root, { recursive: true, force: true });
}
