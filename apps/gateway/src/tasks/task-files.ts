/**
 * When a task's upload directory (INLAID_DATA_DIR/tasks/<name>-<job id>: an uploaded adapter and/or the
 * calibration data the request carried) may go (pure). Files the client named (an adapter under the adapter
 * roots, a calibration `file_id` under INLAID_DATA_DIR/files) are never the gateway's to remove.
 *
 * The workers read a task's files to validate and load its adapter and when a re-quantization that adds the
 * task starts; a published checkpoint version keeps the task's Hessians, not its files. So on DELETE:
 * - a task that never got into a re-quantization (queued, validating, loading, failed, or active on the
 *   current base) loses its directory at once;
 * - a task that did, or may be in the one running now (quantizing, or in a checkpoint version), keeps it
 *   until the re-quantization that drops it from the served version has finished (its `delete` job then
 *   completes). A published version that still holds the task (it was added by a run that was under way
 *   when the task was deleted) leaves the removal queued for the next re-quantization.
 * When an onboarding fails (nothing retries a failed task: creating it again is a new job with its own
 * directory), the same line is drawn: a task that failed before any re-quantization loses its directory at
 * once; one that failed while quantizing or after (a run may still read its files: a run reads its batch
 * when it starts, and a takeover re-reads it) is marked filesPending and keeps it for INLAID_FAILED_FILES_TTL_S,
 * also if it is deleted meanwhile, after which a reconciliation pass removes it unless a run under way holds the
 * task in its batch (a run writes its batch on its rows when it starts; a run that starts later reads only
 * tasks still quantizing, so never a failed one; onboard-queues.service.ts).
 * Removal is idempotent and never leaves INLAID_DATA_DIR/tasks (removeTaskUploadDir).
 */
import type { Stats } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

export function taskUploadDir(dataDir: string, task: string, jobId: string): string {
  return join(dataDir, 'tasks', `${task}-${jobId}`);
}

/** A task upload directory the gateway refuses to remove (not one name directly under INLAID_DATA_DIR/tasks, or not a plain directory). */
export class UnsafeRemoval extends Error {}

/**
 * Removes a task's upload directory, idempotently ('absent' when it is gone already), and only that: the
 * path must be exactly one entry directly under `<dataDir>/tasks` (a name with a separator, `..` or a NUL is
 * refused), and that entry must be a real directory, not a symbolic link (never followed: a link to a
 * directory elsewhere is refused, not emptied). Inside it `rm` unlinks links without following them.
 */
export async function removeTaskUploadDir(dataDir: string, task: string, jobId: string): Promise<'removed' | 'absent'> {
  const root = resolve(dataDir, 'tasks');
  const name = `${task}-${jobId}`;
  const dir = resolve(root, name);
  if (name.includes('\0') || /[\\/]/.test(name) || dirname(dir) !== root || dir === root) throw new UnsafeRemoval(`refusing to remove ${JSON.stringify(name)}: not an entry of ${root}`);
  let st: Stats;
  try {
    st = await lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  if (st.isSymbolicLink() || !st.isDirectory()) throw new UnsafeRemoval(`refusing to remove ${dir}: not a directory (a link is never followed)`);
  await rm(dir, { recursive: true, force: true });
  return 'removed';
}

export interface JobState {
  readonly status: string;
  readonly checkpointVersion: number | null;
}

/** A deleted task whose Hessians may be in a checkpoint version: dropped (and its files freed) at the next one. */
export function dropsAtNextVersion(before: JobState): boolean {
  return before.checkpointVersion !== null || before.status === 'quantizing';
}

/** Whether a task that failed in state `before` may lose its upload directory at once (no re-quantization may read it). */
export function freesAtFailure(before: JobState): boolean {
  return !dropsAtNextVersion(before);
}

interface Removal {
  readonly task: string;
  readonly createdAt: Date;
}

/** The queued removals a published version completes: those of tasks it no longer holds. */
export function completedRemovals<R extends Removal>(removals: readonly R[], published: readonly string[]): R[] {
  const held = new Set(published);
  return removals.filter((r) => !held.has(r.task));
}

/**
 * The removals to run before a re-quantization that adds `adding`: those of names it adds again (a task
 * deleted and then created anew). In one run the worker would keep the old Hessians under such a name (it
 * skips adding a task it holds), then drop the name: the new task would be in no version. Alone first, the
 * removal drops the old Hessians and the run after it adds the new task's.
 */
export function removalsFirst<R extends Removal>(removals: readonly R[], adding: readonly string[]): { first: R[]; rest: R[] } {
  const again = new Set(adding);
  return { first: removals.filter((r) => again.has(r.task)), rest: removals.filter((r) => !again.has(r.task)) };
}

interface JobRow {
  readonly id: string;
  readonly task: string;
  readonly kind: string;
  readonly status: string;
  readonly createdAt: Date;
}

/**
 * The onboardings whose files a completed removal frees: the task's onboardings deleted before the removal
 * was queued (a later onboarding under the same name is a new task with its own directory).
 */
export function freedOnboardings<J extends JobRow>(history: readonly J[], removal: Removal): J[] {
  return history.filter((j) => j.task === removal.task && j.kind === 'onboard' && j.status === 'deleted' && j.createdAt.getTime() <= removal.createdAt.getTime());
}
