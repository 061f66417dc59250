/** Jest globalTeardown of the e2e project: stops the worker zygote and removes the run directory (e2e-global-setup.ts). */
import { rmSync } from 'node:fs';
import type { E2eRun } from './e2e-global-setup';

export default function globalTeardown(): void {
  const run = (globalThis as { inlaidE2eRun?: E2eRun }).inlaidE2eRun;
  if (run === undefined) return;
  if (run.zygotePid !== undefined) {
    try {
      process.kill(run.zygotePid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  rmSync(run.dir, { recursive: true, force: true });
}
