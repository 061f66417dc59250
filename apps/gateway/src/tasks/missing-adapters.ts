/**
 * Which gateway-loaded adapters a worker lacks, or holds from another job (pure; AdapterCatchUp runs it when a
 * worker's Session comes up). The gateway loads an adapter onto every accepting worker (POST /v1/tasks' load or
 * activate step, POST /v1/load_lora_adapter); a worker that starts later or restarts serves only its --adapters-dir and
 * the published checkpoint, which holds the quantized base weights and Hessians but no adapter. A worker whose link was
 * down (a partition, a gateway restart) while a task was deleted or its adapter replaced still holds the old one: it
 * lists the name, and WorkerInfo.adapter_paths says which path LoadAdapter loaded it from. Its task_jobs row says
 * what should be served everywhere.
 */
import { LIVE_JOB_STATUSES, type TaskJob } from '@inlaid/db';

export type LoadJob = Pick<TaskJob, 'task' | 'kind' | 'status' | 'adapterPath' | 'progress'>;

const LIVE: ReadonlySet<string> = new Set(LIVE_JOB_STATUSES);

/**
 * Whether the job's adapter is loaded on every worker: a vLLM-style load still serving, or a live onboarding whose
 * load step (or, with wait_for_quantization, activate step) is done. Read under the task's lock: those steps write
 * it there together with the load, and DELETE / unload (same lock) end the job.
 */
function servedEverywhere(j: LoadJob): boolean {
  if (j.adapterPath === null || !LIVE.has(j.status)) return false;
  if (j.kind === 'load') return j.status === 'serving';
  if (j.kind !== 'onboard') return false;
  const stages = j.progress.stages;
  return j.status === 'active' || stages['load']?.status === 'done' || stages['activate']?.status === 'done';
}

/**
 * What a worker reports of one name: whether it lists it, and the path LoadAdapter loaded it from (undefined when it
 * was not loaded through LoadAdapter: its --adapters-dir, a checkpoint; or the worker predates adapter_paths).
 */
export interface WorkerAdapter {
  readonly listed: boolean;
  readonly path: string | undefined;
}

/** What the catch-up does with one task on one worker. */
export type CatchUpAction = 'none' | 'load' | 'replace' | 'unload';

/**
 * Decided under the task's lock from its latest job. Served everywhere: load it where it is not listed; replace it
 * (unload, then load) where a gateway loaded it from another path (an older job's adapter). Not served: unload it
 * where a gateway loaded it, so no old adapter is served under the name, when the job has ended (deleted, unloaded,
 * failed) or the adapter is not its own (a newer onboarding not loaded yet); a live job's own adapter stays (its load
 * step, e.g. resumed after a gateway crash, finishes the load, or its failure unloads it). An adapter of the worker's
 * own (no LoadAdapter path) is left alone unless missing, and so is a name the database has no job for.
 */
export function catchUpAction(latest: LoadJob | null, w: WorkerAdapter): CatchUpAction {
  if (latest !== null && servedEverywhere(latest)) {
    if (!w.listed) return 'load';
    return w.path !== undefined && w.path !== latest.adapterPath ? 'replace' : 'none';
  }
  if (latest === null || !w.listed || w.path === undefined) return 'none';
  return LIVE.has(latest.status) && latest.adapterPath === w.path ? 'none' : 'unload';
}

/** The live onboard / load jobs with an adapter path: those whose adapter a worker may have to load or keep. */
function liveLoadJobs(jobs: readonly LoadJob[]): LoadJob[] {
  return jobs.filter((j) => (j.kind === 'onboard' || j.kind === 'load') && LIVE.has(j.status) && j.adapterPath !== null);
}

/**
 * The tasks to look at for a worker listing `listed`, with `paths` (WorkerInfo.adapter_paths), sorted: those of live
 * onboard / load jobs with an adapter path that it does not list or lists from another path, and every name it holds
 * from a LoadAdapter path no live job has (its task deleted or replaced meanwhile). Also the ones whose load may still
 * be under way (a step holding the lock): the caller decides each under the task's lock with catchUpAction.
 */
export function catchUpTasks(jobs: readonly LoadJob[], listed: ReadonlySet<string>, paths: ReadonlyMap<string, string>): string[] {
  const live = liveLoadJobs(jobs);
  const names = live.filter((j) => !listed.has(j.task) || (paths.has(j.task) && paths.get(j.task) !== j.adapterPath)).map((j) => j.task);
  for (const [name, path] of paths) if (!live.some((j) => j.task === name && j.adapterPath === path)) names.push(name);
  return [...new Set(names)].sort();
}

/**
 * Of `tasks` (catchUpTasks' answer for the same jobs, listed and paths), those whose requests must not go to the
 * worker until the catch-up has decided them (its hold): a task served everywhere that it lacks or holds from another path (to load or replace), and a name it holds from a
 * LoadAdapter path that is not its live job's (to unload). Not a task whose live job is not served anywhere yet
 * (queued, validating, quantizing before its load): no worker serves it, so holding it would only turn its 404 into a
 * 30 s wait and a 503. Read outside the task's lock: the catch-up decides each under it (catchUpAction).
 */
export function catchUpHolds(
  tasks: readonly string[],
  jobs: readonly LoadJob[],
  listed: ReadonlySet<string>,
  paths: ReadonlyMap<string, string>,
): string[] {
  const liveJob = new Map(liveLoadJobs(jobs).map((j) => [j.task, j]));
  return tasks.filter((name) => {
    const job = liveJob.get(name);
    const w = { listed: listed.has(name), path: paths.get(name) };
    return job === undefined ? w.listed && w.path !== undefined : catchUpAction(job, w) !== 'none';
  });
}
