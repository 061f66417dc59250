/**
 * Test fixtures on the Python side: a tiny random Llama with two random LoRA adapters (made by
 * workers/tests/factories.py), and a real worker process serving them.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

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

export async function makeTinyFixture(): Promise<TinyFixture> {
  const root = mkdtempSync(join(tmpdir(), 'inlaid-e2e-'));
  await promisify(execFile)(PYTHON, ['-c', MAKE_FIXTURE, root], { cwd: REPO, timeout: 120_000 });
  return { root, modelDir: join(root, 'model'), adaptersDir: join(root, 'adapters'), adapters: ['poet', 'sql'] };
}

export interface WorkerProcess {
  readonly addr: string;
  readonly ready: Record<string, unknown>;
  readonly pid: number;
  kill(): Promise<void>;
}

/** Starts `python -m inlaid_worker.server` and resolves once it prints its `{"event":"ready"}` line. */
export function startWorker(fixture: TinyFixture, port: number, timeoutMs = 120_000, extraArgs: readonly string[] = []): Promise<WorkerProcess> {
  const args = ['-m', 'inlaid_worker.server', '--model', fixture.modelDir, '--adapters-dir', fixture.adaptersDir,
    '--port', String(port), '--kv-cache-bytes', String(8 << 20), '--worker-id', 'e2e-worker', ...extraArgs];
  const child: ChildProcess = spawn(PYTHON, args, {
    cwd: REPO,
    env: { ...process.env, OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      void kill();
      reject(new Error(`worker not ready after ${timeoutMs} ms:\n${log}`));
    }, timeoutMs);
    child.stderr?.on('data', (b: Buffer) => (log += b.toString()));
    let pendingLine = '';
    child.stdout?.on('data', (b: Buffer) => {
      log += b.toString();
      const lines = (pendingLine + b.toString()).split('\n');
      pendingLine = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim().startsWith('{')) continue;
        const event = JSON.parse(line) as Record<string, unknown>;
        if (event['event'] !== 'ready') continue;
        clearTimeout(timer);
        resolvePromise({ addr: `127.0.0.1:${port}`, ready: event, pid: child.pid ?? 0, kill });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`worker exited with ${code} before ready:\n${log}`));
    });
  });
}
