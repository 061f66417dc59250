/**
 * Fixtures built once per jest run and copied for each suite. The Python fixture scripts are seeded, so a copy
 * is what a fresh build would make in its place: the build dir's absolute path, written into the adapters'
 * adapter_config.json (base_model_name_or_path) and README.md, is rewritten to the copy's. Builds go under
 * $INLAID_E2E_RUN_DIR (e2e-global-setup.ts), which lives as long as the run; without it every call builds.
 * Test workers running in parallel build a key one at a time: the others wait for that build (a lock file holding
 * the builder's pid; a lock whose builder is gone is taken over) instead of building it again side by side.
 */
import { cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TEXT = /\.(json|md|jsonl|txt)$/;

/** A fresh directory (prefix `prefix` under the OS temp dir) holding what `build(dir)` makes, built once per `key` and run. */
export async function cachedFixture(key: string, prefix: string, build: (dir: string) => Promise<void>): Promise<string> {
  const runDir = process.env['INLAID_E2E_RUN_DIR'];
  if (runDir === undefined) {
    const root = mkdtempSync(join(tmpdir(), prefix));
    await build(root);
    return root;
  }
  const built = join(runDir, `fixture-${key}`);
  const lock = join(runDir, `.lock-${key}`);
  while (!isDir(built)) {
    if (!takeLock(lock)) {
      await sleep(100); // another test worker builds it
      continue;
    }
    const tmp = mkdtempSync(join(runDir, `.building-${key}-`));
    try {
      if (!isDir(built)) {
        await build(tmp);
        rewritePaths(tmp, tmp, built);
        renameSync(tmp, built);
      }
    } catch (err) {
      if (!isDir(built)) throw err; // otherwise another test worker finished it first
    } finally {
      rmSync(tmp, { recursive: true, force: true });
      rmSync(lock, { force: true });
    }
  }
  const root = mkdtempSync(join(tmpdir(), prefix)); // made only now: a failed build leaves no empty copy behind
  cpSync(built, root, { recursive: true });
  rewritePaths(root, built, root);
  return root;
}

/** Creates the lock file with this process's pid; false while a live process holds it (a dead holder's lock is removed). */
function takeLock(lock: string): boolean {
  try {
    writeFileSync(lock, String(process.pid), { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const holder = Number(readFileSyncOrEmpty(lock)); // 0 while its creator has not written its pid yet: wait
  if (holder > 0 && !alive(holder)) rmSync(lock, { force: true }); // died mid-build: the next try takes it over
  return false;
}

function readFileSyncOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isDir(path: string): boolean {
  try {
    return readdirSync(path) !== undefined;
  } catch {
    return false;
  }
}

/** Replaces `from` with `to` in every text file under `dir`. */
function rewritePaths(dir: string, from: string, to: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) rewritePaths(p, from, to);
    else if (TEXT.test(e.name)) {
      const text = readFileSync(p, 'utf8');
      if (text.includes(from)) writeFileSync(p, text.split(from).join(to));
    }
  }
}
