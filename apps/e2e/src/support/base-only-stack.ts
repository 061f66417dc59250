/**
 * The onboarding and sampling specs' stack: a tiny worker that starts serving the base only (no adapters, no
 * checkpoint, so re-quantization is skipped and a task goes active on the current base) behind the real gateway on a
 * fresh Postgres database, with uploads under <fixture>/data (no-adapter-stack.ts).
 */
import { NoAdapterStack, startNoAdapterStack, stopNoAdapterStack } from './no-adapter-stack';
import { freePort } from './ports';
import { makeTinyFixture, startWorker, TinyFixture } from './python-worker';

export interface BaseOnlyStack extends NoAdapterStack {
  readonly fx: TinyFixture;
}

/** Starts the stack with BullMQ queue prefix `queuePrefix` and waits for /readyz; on failure stops what it started. */
export async function startBaseOnlyStack(queuePrefix: string): Promise<BaseOnlyStack> {
  const fx = await makeTinyFixture();
  const stack = await startNoAdapterStack({
    root: fx.root,
    startWorker: async (adaptersDir) => startWorker({ ...fx, adaptersDir }, await freePort()),
    adapterRoot: fx.adaptersDir, // where the onboarding specs' uploaded tasks go
    queuePrefix,
    readyTimeoutMs: 10_000,
  });
  return { ...stack, fx };
}

/** Stops the worker and the gateway, drops the database and removes the fixture (a no-op for undefined). */
export const stopBaseOnlyStack: (stack: BaseOnlyStack | undefined) => Promise<void> = stopNoAdapterStack;
