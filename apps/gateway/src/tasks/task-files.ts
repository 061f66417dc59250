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
 */
import { join } from 'node:path';

export function taskUploadDir(dataDir: string, task: string, jobId: string): string {
  return join(dataDir, 'tasks', `${task}-${jobId}`);
}

export interface JobState {
  readonly status: string;
  readonly checkpointVersion: number | null;
}

/** A deleted task whose Hessians may be in a checkpoint version: dropped (and its files freed) at the next one. */
export function dropsAtNextVersion(before: JobState): boolean {
  return before.checkpointVersion !== null || before.status === 'quantizing';
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
