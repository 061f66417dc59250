/**
 * Which gateway-loaded adapters a worker lacks, or holds from another job (pure; AdapterCatchUp runs it when a
 * worker's Session comes up). The gateway loads an adapter onto every accepting worker (POST /v1/tasks' load or
 * activate step, POST /v1/load_lora_adapter); a worker that starts later or restarts serves only its --adapters-dir and
 * the published checkpoint, which holds the quantized base weights and Hessians but no adapter. A worker whose link was
 * down (a partition, a gateway restart) while a task was deleted or its adapter replaced still holds the old one: it
 * lists the name, WorkerInfo.adapter_paths says which path LoadAdapter loaded it from, and WorkerInfo.adapter_digests
 * the content digest of what it read there. Its task_jobs row says what should be served everywhere: the job's path,
 * and its adapter_digest (job-digest.ts): the digest of the files its validation read (ValidateAdapter's answer), set
 * from the validate step on (from the start for a vLLM-style load), then that of what its load step loaded. So an
 * adapter rewritten in place at the same path (a task deleted and onboarded again from the same directory with new
 * files) is told from the old one both once the job is served (replaced) and while it is live but not loaded yet
 * (unloaded: it must not serve the old weights under the name meanwhile). A worker whose Session came up before the
 * job had a digest (queued, or validated by a worker that reports none) passed this catch-up with the old adapter:
 * the validate step unloads it, and the load step replaces it (WorkerAdminService.unloadOthers, loadEverywhere). A
 * worker refuses to unload an adapter with requests in flight: then the step runs that worker's catch-up again once
 * the job's digest is committed (AdapterCatchUp.recheck), which now tells the old adapter from the job's, so
 * catchUpHolds holds the name there (the requests drain) and the catch-up retries the unload until it goes through;
 * the load step fails ABORTED (retried) while the old adapter is there. Where
 * either digest is unknown (an older worker; a job validated and loaded before digests, or whose workers read
 * different bytes with no validated digest) the paths alone decide, as before digests.
 */
import { LIVE_JOB_STATUSES, type TaskJob } from '@inlaid/db';

export type LoadJob = Pick<TaskJob, 'id' | 'task' | 'kind' | 'status' | 'adapterPath' | 'adapterDigest' | 'progress'>;

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
 * A digest a catch-up's own load or replace left on a worker for a task's job when it was not the job's (the files at
 * the job's path changed after its load step): counted as the job's adapter on that worker, so that it is not replaced
 * again and again (each load reads what is there now). AdapterCatchUp keeps them.
 */
export interface Settled {
  readonly job: string;
  readonly digest: string;
}

/**
 * What a worker reports of one name: whether it lists it, the path LoadAdapter loaded it from and the digest of what
 * it read there (undefined when it was not loaded through LoadAdapter: its --adapters-dir, a checkpoint; or the worker
 * predates adapter_paths / adapter_digests), and the catch-up's Settled digest for the name on this worker, if any.
 */
export interface WorkerAdapter {
  readonly listed: boolean;
  readonly path: string | undefined;
  readonly digest: string | undefined;
  readonly settled?: Settled;
}

/** What a worker reports of every name (its model list, adapter_paths, adapter_digests), and its Settled digests. */
export interface WorkerAdapters {
  readonly listed: ReadonlySet<string>;
  readonly paths: ReadonlyMap<string, string>;
  readonly digests: ReadonlyMap<string, string>;
  readonly settled: ReadonlyMap<string, Settled>;
}

/** One name of `w`. */
export function adapterOf(w: WorkerAdapters, name: string): WorkerAdapter {
  return { listed: w.listed.has(name), path: w.paths.get(name), digest: w.digests.get(name), settled: w.settled.get(name) };
}

/**
 * Whether the worker's LoadAdapter adapter is the job's: loaded from the job's path and, when the job's digest (its
 * validation's, then its load step's) and the worker's are both known, of the job's digest (or of the digest a
 * catch-up settled for this job there).
 */
function isJobsAdapter(job: LoadJob, w: WorkerAdapter): boolean {
  if (w.path !== job.adapterPath) return false;
  if (job.adapterDigest === null || w.digest === undefined || w.digest === job.adapterDigest) return true;
  return w.settled !== undefined && w.settled.job === job.id && w.settled.digest === w.digest;
}

/** What the catch-up does with one task on one worker. */
export type CatchUpAction = 'none' | 'load' | 'replace' | 'unload';

/**
 * Decided under the task's lock from its latest job. Served everywhere: load it where it is not listed; replace it
 * (unload, then load) where a gateway loaded another adapter (isJobsAdapter: from another path, an older job's; or from
 * the job's path with another digest, files rewritten in place since). Not served: unload it where a gateway loaded
 * it, so no old adapter is served under the name, when the job has ended (deleted, unloaded, failed) or the adapter is
 * not its own (isJobsAdapter: a newer onboarding not loaded yet, from another path, or from its path with another
 * digest than the one its validation recorded); a live job's own adapter stays (its load step, e.g. resumed after a
 * gateway crash, finishes the load, or its failure unloads it). An adapter of the worker's own (no LoadAdapter path)
 * is left alone unless missing, and so is a name the database has no job for.
 */
export function catchUpAction(latest: LoadJob | null, w: WorkerAdapter): CatchUpAction {
  if (latest !== null && servedEverywhere(latest)) {
    if (!w.listed) return 'load';
    return w.path !== undefined && !isJobsAdapter(latest, w) ? 'replace' : 'none';
  }
  if (latest === null || !w.listed || w.path === undefined) return 'none';
  return LIVE.has(latest.status) && isJobsAdapter(latest, w) ? 'none' : 'unload';
}

/** The live onboard / load jobs with an adapter path: those whose adapter a worker may have to load or keep. */
function liveLoadJobs(jobs: readonly LoadJob[]): LoadJob[] {
  return jobs.filter((j) => (j.kind === 'onboard' || j.kind === 'load') && LIVE.has(j.status) && j.adapterPath !== null);
}

/**
 * The tasks to look at for worker `w`, sorted: those of live onboard / load jobs with an adapter path that it does not
 * list or holds another LoadAdapter adapter of (isJobsAdapter: another path, or the same with another digest), and
 * every name it holds from a LoadAdapter path no live job has (its task deleted or replaced meanwhile). Also the ones
 * whose load may still be under way (a step holding the lock): the caller decides each under the task's lock with
 * catchUpAction.
 */
export function catchUpTasks(jobs: readonly LoadJob[], w: WorkerAdapters): string[] {
  const live = liveLoadJobs(jobs);
  const names = live.filter((j) => {
    const a = adapterOf(w, j.task);
    return !a.listed || (a.path !== undefined && !isJobsAdapter(j, a));
  }).map((j) => j.task);
  for (const [name, path] of w.paths) if (!live.some((j) => j.task === name && j.adapterPath === path)) names.push(name);
  return [...new Set(names)].sort();
}

/**
 * Of `tasks` (catchUpTasks' answer for the same jobs and worker), those whose requests must not go to the worker until
 * the catch-up has decided them (its hold): a task served everywhere that it lacks or holds another adapter of (to load
 * or replace: another path, or the same path with another digest), and a name it holds as an adapter that is not its
 * live job's (to unload: another path, or the job's path with another digest than its validation's). Not a task whose
 * live job is not served anywhere yet (queued, validating, quantizing before its load) and that it lacks or holds as
 * the job's own: no worker serves it, so holding it would only turn its 404 into a 30 s wait and a 503. Nor one whose
 * digest a catch-up settled for its job there (Settled). Read outside the task's lock: the catch-up decides each under
 * it (catchUpAction).
 */
export function catchUpHolds(tasks: readonly string[], jobs: readonly LoadJob[], w: WorkerAdapters): string[] {
  const liveJob = new Map(liveLoadJobs(jobs).map((j) => [j.task, j]));
  return tasks.filter((name) => {
    const job = liveJob.get(name);
    const a = adapterOf(w, name);
    return job === undefined ? a.listed && a.path !== undefined : catchUpAction(job, a) !== 'none';
  });
}
