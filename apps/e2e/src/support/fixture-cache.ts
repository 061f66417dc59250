/**
 * Fixtures built once per jest run and copied for each suite. The Python fixture scripts are seeded, so a copy
 * is what a fresh build would make in its place: the build dir's absolute path, written into the adapters'
 * adapter_config.json (base_model_name_or_path) and README.md, is rewritten to the copy's. Builds go under
 * $INLAID_E2E_RUN_DIR (e2e-global-setup.ts), which lives as long as the run; without it every call builds.
 * Test workers running in parallel build a key one at a time: the others wait for that build (a lock file holding
 * the builder's pid, made whole by a hard link; a lock whose builder is gone is taken over; a wait longer than
 * LOCK_WAIT_MS is an error naming the holder) instead of building it again side by side.
 */
import { cpSync, linkSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TEXT = /\.(json|md|jsonl|txt)$/;
const LOCK_WAIT_MS = 10 * 60_000; // longer than any fixture build (the slowest takes ~1 min on 2 cores)

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
  const since = Date.now();
  while (!isDir(built)) {
    if (!takeLock(lock)) {
      if (Date.now() - since > LOCK_WAIT_MS) {
        throw new Error(`waited ${LOCK_WAIT_MS / 1000} s for fixture ${key}: ${lock} held by pid ${readFileSyncOrEmpty(lock)}`);
      }
      await sleep(100); // another test worker builds it
      continue;
    }
    let tmp: string | undefined;
    try {
      tmp = mkdtempSync(join(runDir, `.building-${key}-`));
      if (!isDir(built)) {
        await build(tmp);
        rewritePaths(tmp, tmp, built);
        renameSync(tmp, built);
      }
    } catch (err) {
      if (!isDir(built)) throw err; // otherwise another test worker finished it first
    } finally {
      if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
      rmSync(lock, { force: true });
    }
  }
  const root = mkdtempSync(join(tmpdir(), prefix)); // made only now: a failed build leaves no empty copy behind
  cpSync(built, root, { recursive: true });
  rewritePaths(root, built, root);
  return root;
}

/**
 * Takes the lock: the pid goes into a file of this process's own, hard-linked to the lock's name (the link fails while
 * the lock exists), so a lock file always holds its holder's pid. False while a live process holds it (a dead holder's
 * lock is removed, for the next try to take).
 */
function takeLock(lock: string): boolean {
  const mine = `${lock}.${process.pid}`;
  writeFileSync(mine, String(process.pid));
  try {
    linkSync(mine, lock);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    rmSync(mine, { force: true });
  }
  const holder = Number(readFileSyncOrEmpty(lock)); // 0 if the lock went in between: try again
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
