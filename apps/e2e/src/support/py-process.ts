/**
 * `python -m <module> <args>` (or `-c <code>`) for the e2e tests, as a process handle: spawned, or forked from the
 * run's worker zygote (worker_zygote.py, started by e2e-global-setup.ts; its socket in $INLAID_E2E_ZYGOTE) when there
 * is one, which saves the torch/transformers imports (a tiny-model worker was ready after 13-14 s spawned, ~1 s forked,
 * on the loaded 2-core VM). Either way the process runs the module's own code from
 * its start with the given environment and working directory, and `pid` is its real pid (signals go to it).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { constants } from 'node:os';

export interface PyProcess {
  readonly pid: number;
  /** Resolves with the exit code (negative: the signal that killed it) once the process has exited. */
  readonly exited: Promise<number>;
  alive(): boolean;
  /** Sends `signal` to the process unless it has exited (an exit not yet reported is not an error). */
  kill(signal: NodeJS.Signals): void;
  onStdout(cb: (b: Buffer) => void): void;
  onStderr(cb: (b: Buffer) => void): void;
}

export interface PyLaunch {
  readonly python: string;
  /** Run as `-m module`, or `-c code` when `code` is given. */
  readonly module?: string;
  readonly code?: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
}

/** Forked from the zygote when $INLAID_E2E_ZYGOTE names one, else spawned. */
export function launchPython(l: PyLaunch): Promise<PyProcess> {
  const sock = process.env['INLAID_E2E_ZYGOTE'];
  return sock ? forkFromZygote(sock, l) : Promise.resolve(spawnPython(l));
}

export function spawnPython(l: PyLaunch): PyProcess {
  const head = l.code !== undefined ? ['-c', l.code] : ['-m', l.module ?? ''];
  const child = spawn(l.python, [...head, ...l.args], { cwd: l.cwd, env: l.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let done = false;
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve(code ?? -(signal === null ? 0 : constants.signals[signal]));
    });
    // it did not start (no interpreter): 'exit' may never come, and an 'error' with no listener would crash the test run
    child.once('error', (err) => {
      process.stderr.write(`spawning ${l.python}: ${err.message}\n`);
      done = true;
      resolve(-1);
    });
  });
  const alive = (): boolean => !done && child.exitCode === null && child.signalCode === null;
  return {
    pid: child.pid ?? 0,
    exited,
    alive,
    kill: (signal) => {
      if (alive()) child.kill(signal);
    },
    onStdout: (cb) => child.stdout?.on('data', cb),
    onStderr: (cb) => child.stderr?.on('data', cb),
  };
}

/** Connects to the zygote (waiting while it still imports) and asks it for the process. */
async function forkFromZygote(sock: string, l: PyLaunch): Promise<PyProcess> {
  const conn = await connectWhenListening(sock, 300_000);
  conn.write(JSON.stringify({ module: l.module, code: l.code, args: l.args, env: l.env, cwd: l.cwd }) + '\n');
  // what arrives before a listener is added (it may come in the pid's chunk) is kept for the first one
  const streams = { out: stream(), err: stream() };
  let done = false;
  let pending = '';
  let gotPid!: (pid: number) => void;
  let exit!: (code: number) => void;
  const pid = new Promise<number>((resolve) => (gotPid = resolve));
  const exited = new Promise<number>((resolve) => (exit = resolve));
  const finish = (code: number) => {
    done = true;
    exit(code);
    conn.destroy();
  };
  conn.on('data', (b: Buffer) => {
    const lines = (pending + b.toString()).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const [kind, value = ''] = line.split(' ');
      if (kind === 'pid') gotPid(Number(value));
      else if (kind === 'out' || kind === 'err') streams[kind].emit(Buffer.from(value, 'base64'));
      else if (kind === 'exit') finish(Number(value));
    }
  });
  conn.on('close', () => {
    if (!done) finish(-1);
  });
  conn.on('error', () => undefined);
  const forked = await Promise.race([pid, exited.then(() => undefined)]);
  if (forked === undefined) throw new Error('the worker zygote closed the connection before the fork');
  return {
    pid: forked,
    exited,
    alive: () => !done,
    kill: (signal) => {
      if (!done) signalPid(forked, signal);
    },
    onStdout: streams.out.on,
    onStderr: streams.err.on,
  };
}

/** `process.kill`, except that a process the zygote has already reaped (its exit still on the way) is no error. */
function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Chunks go to every listener; those that came before the first listener are replayed to it. */
function stream(): { emit(b: Buffer): void; on(cb: (b: Buffer) => void): void } {
  const early: Buffer[] = [];
  const listeners: Array<(b: Buffer) => void> = [];
  return {
    emit: (b) => (listeners.length === 0 ? early.push(b) : listeners.forEach((cb) => cb(b))),
    on: (cb) => {
      listeners.push(cb);
      if (listeners.length === 1) early.splice(0).forEach((b) => cb(b));
    },
  };
}

async function connectWhenListening(sock: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const c = connect(sock);
        c.once('connect', () => resolve(c));
        c.once('error', reject);
      });
    } catch (e) {
      const log = `${sock}.log`;
      if (existsSync(`${sock}.exited`)) throw new Error(`the worker zygote exited:\n${existsSync(log) ? readFileSync(log, 'utf8') : ''}`, { cause: e });
      if (Date.now() > deadline) throw new Error(`the worker zygote did not listen on ${sock} within ${timeoutMs} ms`, { cause: e });
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
