/**
 * Which gateway-loaded adapters a worker lacks (pure; AdapterCatchUp runs it when a worker's Session comes up).
 * The gateway loads an adapter onto every accepting worker (POST /v1/tasks' load or activate step, POST
 * /v1/load_lora_adapter); a worker that starts later or restarts serves only its --adapters-dir and the published
 * checkpoint, which holds the quantized base weights and Hessians but no adapter. Its task_jobs row says what
 * should be served everywhere.
 */
import { LIVE_JOB_STATUSES, type TaskJob } from '@inlaid/db';

export type LoadJob = Pick<TaskJob, 'task' | 'kind' | 'status' | 'adapterPath' | 'progress'>;

const LIVE: ReadonlySet<string> = new Set(LIVE_JOB_STATUSES);

/**
 * Whether the job's adapter is loaded on every worker: a vLLM-style load still serving, or a live onboarding whose
 * load step (or, with wait_for_quantization, activate step) is done. Read under the task's lock: those steps write
 * it there together with the load, and DELETE / unload (same lock) end the job.
 */
export function servedEverywhere(j: LoadJob): boolean {
  if (j.adapterPath === null || !LIVE.has(j.status)) return false;
  if (j.kind === 'load') return j.status === 'serving';
  if (j.kind !== 'onboard') return false;
  const stages = j.progress.stages;
  return j.status === 'active' || stages['load']?.status === 'done' || stages['activate']?.status === 'done';
}

/**
 * The tasks to look at for a worker listing `served`: those of live onboard / load jobs with an adapter path that it
 * does not list, sorted. Also the ones whose load may still be under way (a step holding the lock): the caller
 * decides each under the task's lock with servedEverywhere.
 */
export function missingTasks(jobs: readonly LoadJob[], served: ReadonlySet<string>): string[] {
  const names = jobs.filter((j) => (j.kind === 'onboard' || j.kind === 'load') && LIVE.has(j.status) && j.adapterPath !== null && !served.has(j.task)).map((j) => j.task);
  return [...new Set(names)].sort();
}
