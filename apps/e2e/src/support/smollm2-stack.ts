/**
 * The real-model specs' stack: the worker serving the default model (SmolLM2-135M-Instruct, `--model smollm2`) with
 * no adapters behind the real gateway on a fresh Postgres database, and the base model's id from /v1/models
 * (no-adapter-stack.ts).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NoAdapterStack, startNoAdapterStack, stopNoAdapterStack } from './no-adapter-stack';
import { freePort } from './ports';
import { startWorker } from './python-worker';

export type SmolStack = NoAdapterStack;

/** Starts the stack (BullMQ prefix `queuePrefix`, temp dir `inlaid-e2e-<name>-*`, extra worker flags) and waits for
 * /readyz; on failure stops what it started. */
export async function startSmolStack(name: string, queuePrefix: string, workerArgs: string[] = []): Promise<SmolStack> {
  const root = mkdtempSync(join(tmpdir(), `inlaid-e2e-${name}-`));
  return startNoAdapterStack({
    root,
    startWorker: async (adaptersDir) => startWorker({ root, modelDir: 'smollm2', adaptersDir, adapters: [] }, await freePort(), 180_000, workerArgs),
    queuePrefix,
    readyTimeoutMs: 30_000,
  });
}

/** Stops the worker and the gateway and removes the temp dir (a no-op for undefined). */
export const stopSmolStack: (stack: SmolStack | undefined) => Promise<void> = stopNoAdapterStack;
