/**
 * Jest globalSetup of the e2e project: a per-run directory ($INLAID_E2E_RUN_DIR, removed by e2e-global-teardown.ts)
 * for the fixtures built once per run (fixture-cache.ts), and the worker zygote (worker_zygote.py) listening in it
 * ($INLAID_E2E_ZYGOTE), which forks every test worker (py-process.ts). The zygote is not waited for here: it
 * imports torch and transformers while the first suite builds its fixture. INLAID_E2E_ZYGOTE=off spawns every
 * worker instead.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PYTHON, REPO } from './python-worker';

export interface E2eRun {
  readonly dir: string;
  readonly zygotePid?: number;
}

export default function globalSetup(): void {
  const dir = mkdtempSync(join(tmpdir(), 'inlaid-e2e-run-'));
  process.env['INLAID_E2E_RUN_DIR'] = dir;
  const run: { dir: string; zygotePid?: number } = { dir };
  if (process.env['INLAID_E2E_ZYGOTE'] === 'off') {
    delete process.env['INLAID_E2E_ZYGOTE'];
  } else {
    const sock = join(dir, 'zygote.sock');
    const log = openSync(`${sock}.log`, 'w');
    const zygote = spawn(PYTHON, [join(__dirname, 'worker_zygote.py'), sock], {
      cwd: REPO,
      env: { ...process.env, OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    const exited = (why = ''): void => {
      try {
        if (why !== '') appendFileSync(`${sock}.log`, why);
        writeFileSync(`${sock}.exited`, ''); // py-process.ts stops waiting for it
      } catch {
        /* the run directory is gone: the run is over */
      }
    };
    zygote.once('exit', () => exited());
    // it did not start (no interpreter): without a listener the 'error' would crash jest, and 'exit' may never come
    zygote.once('error', (err) => exited(`spawning ${PYTHON}: ${err.message}\n`));
    zygote.unref();
    process.env['INLAID_E2E_ZYGOTE'] = sock;
    run.zygotePid = zygote.pid;
  }
  (globalThis as { inlaidE2eRun?: E2eRun }).inlaidE2eRun = run;
}
