/** The onboarding e2e stack: the tiny model's MLGPTQ fixture, a worker serving it, and a ready gateway on it. */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Harness, startHarness, waitFor } from './gateway-harness';
import { makeOnboardFixture, OnboardFixture } from './onboard-fixture';
import { freePort } from './ports';
import { startWorker, WorkerProcess } from './python-worker';
import { jsonCall } from './task-http';

export interface OnboardStack {
  fx: OnboardFixture;
  worker: WorkerProcess;
  h: Harness;
}

/** Fixture, worker (--checkpoint) and gateway (its own queue prefix; `env` added), /readyz answered. */
export async function startOnboardStack(env: Record<string, string> = {}): Promise<OnboardStack> {
  const fx = await makeOnboardFixture();
  let worker: WorkerProcess | undefined;
  let h: Harness | undefined;
  try {
    worker = await startWorker(fx, await freePort(), 120_000, ['--checkpoint', fx.checkpoint]);
    h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: fx.adapterRoot, INLAID_DATA_DIR: fx.dataDir, INLAID_QUEUE_PREFIX: `e2e${randomBytes(4).toString('hex')}`, ...env });
    const url = h.gateway.httpUrl;
    await waitFor(async () => ((await fetch(`${url}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
    return { fx, worker, h };
  } catch (err) {
    await stopOnboardStack({ fx, worker, h });
    throw err;
  }
}

/** Stops what was started (any part may be missing) and removes the fixture. */
export async function stopOnboardStack(s: Partial<OnboardStack> | undefined): Promise<void> {
  await s?.worker?.kill();
  await s?.h?.close();
  if (s?.fx !== undefined) rmSync(s.fx.root, { recursive: true, force: true });
}

/** Polls GET /v1/tasks/:name until its status is `want` (its JSON); throws at once if it turns `failed` instead. */
export function untilTaskStatus(base: string, name: string, want: string, timeoutMs: number): Promise<any> {
  return waitFor(async () => {
    const r = await jsonCall(base, 'GET', `/v1/tasks/${name}`);
    if (r.json?.status === 'failed' && want !== 'failed') throw new Error(`task ${name} failed: ${r.json.error}`);
    return r.json?.status === want ? r.json : undefined;
  }, timeoutMs, `task ${name} ${want}`);
}
