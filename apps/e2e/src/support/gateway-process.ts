/**
 * The real gateway as a child process (`node apps/gateway/dist/main.js`, the production entry point), for
 * tests that kill it: SIGKILL gives it no chance to clean up (no shutdown hooks, no lock released but by
 * Postgres and Redis themselves). buildGateway() brings dist/ up to date first (incremental, ~2 s when it is).
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from './gateway-harness';
import { freePort } from './ports';
import { REPO } from './python-worker';

export interface GatewayProcess {
  readonly pid: number;
  readonly httpUrl: string;
  /** What it printed so far (stdout and stderr). */
  log(): string;
  /** Sends `signal` and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function buildGateway(): Promise<void> {
  await promisify(execFile)('npx', ['tsc', '-b', 'apps/gateway'], { cwd: REPO, timeout: 300_000 });
}

/** Starts the gateway with `env` (plus its own ports) and resolves once /readyz answers 200. */
export async function startGatewayProcess(env: Record<string, string>, readyMs = 30_000): Promise<GatewayProcess> {
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [join(REPO, 'apps/gateway/dist/main.js')], {
    cwd: REPO,
    env: { ...process.env, PORT: String(port), GRPC_PORT: String(await freePort()), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  for (const s of [child.stdout, child.stderr]) s?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  const httpUrl = `http://127.0.0.1:${port}`;
  const ready = waitFor(async () => ((await fetch(`${httpUrl}/readyz`)).ok ? true : undefined), readyMs, 'the gateway process to be ready');
  try {
    await Promise.race([ready, exited.then(() => Promise.reject(new Error('the gateway process exited')))]);
  } catch (err) {
    await kill();
    throw new Error(`${String(err)}\n${out}`, { cause: err });
  }
  return { pid: child.pid ?? 0, httpUrl, log: () => out, kill };
}
