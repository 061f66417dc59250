/**
 * Test fixtures on the Python side: a tiny random Llama with two random LoRA adapters (made by
 * workers/tests/factories.py), and a real worker process serving them.
 */
import { join, resolve } from 'node:path';
import { cachedFixture } from './fixture-cache';
import { launchPython } from './py-process';

export const REPO = resolve(__dirname, '../../../..');
export const PYTHON = join(REPO, '.venv/bin/python');

export interface TinyFixture {
  readonly root: string;
  readonly modelDir: string;
  readonly adaptersDir: string;
  readonly adapters: readonly string[];
}

const MAKE_FIXTURE = `
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, 'workers/tests')
from factories import make_tiny_llama, make_random_adapter
root = sys.argv[1]
base = make_tiny_llama(root + '/model', seed=0)
make_random_adapter(root + '/adapters/sql', base, rank=8, alpha=16, targets=['q_proj', 'v_proj'], seed=1)
make_random_adapter(root + '/adapters/poet', base, rank=4, alpha=8, targets=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed=2)
`;

/** The fixture in a fresh temp dir (built once per run, fixture-cache.ts). */
export async function makeTinyFixture(): Promise<TinyFixture> {
  const root = await cachedFixture('tiny', 'inlaid-e2e-', (dir) => runPython(MAKE_FIXTURE, [dir]));
  return { root, modelDir: join(root, 'model'), adaptersDir: join(root, 'adapters'), adapters: ['poet', 'sql'] };
}

/** Runs a fixture script (`python -c code args`, py-process.ts) in the repository root; rejects with its output if it fails. */
export async function runPython(code: string, args: readonly string[], timeoutMs = 180_000): Promise<void> {
  const p = await launchPython({ python: PYTHON, code, args, cwd: REPO, env: process.env });
  let log = '';
  p.onStdout((b) => (log += b.toString()));
  p.onStderr((b) => (log += b.toString()));
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const exit = await p.exited.finally(() => clearTimeout(timer));
  if (exit !== 0) throw new Error(`python -c exited with ${exit}:\n${log}`);
}

export interface WorkerProcess {
  readonly addr: string;
  readonly ready: Record<string, unknown>;
  readonly pid: number;
  kill(): Promise<void>;
}

/** Starts `python -m inlaid_worker.server` (py-process.ts) and resolves once it prints its `{"event":"ready"}` line. */
export async function startWorker(fixture: TinyFixture, port: number, timeoutMs = 120_000, extraArgs: readonly string[] = []): Promise<WorkerProcess> {
  const args = ['--model', fixture.modelDir, '--adapters-dir', fixture.adaptersDir,
    '--port', String(port), '--kv-cache-bytes', String(8 << 20), '--worker-id', 'e2e-worker', ...extraArgs];
  const child = await launchPython({
    python: PYTHON,
    module: 'inlaid_worker.server',
    args,
    cwd: REPO,
    env: { ...process.env, OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' },
  });
  let log = '';
  const kill = async () => {
    child.kill('SIGKILL');
    await child.exited;
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      void kill();
      reject(new Error(`worker not ready after ${timeoutMs} ms:\n${log}`));
    }, timeoutMs);
    child.onStderr((b: Buffer) => (log += b.toString()));
    let pendingLine = '';
    child.onStdout((b: Buffer) => {
      log += b.toString();
      const lines = (pendingLine + b.toString()).split('\n');
      pendingLine = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim().startsWith('{')) continue;
        const event = JSON.parse(line) as Record<string, unknown>;
        if (event['event'] !== 'ready') continue;
        clearTimeout(timer);
        resolvePromise({ addr: `127.0.0.1:${port}`, ready: event, pid: child.pid, kill });
      }
    });
    void child.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`worker exited with ${code} before ready:\n${log}`));
    });
  });
}
