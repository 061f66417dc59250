/**
 * The adapter digest a job records (task_jobs.adapter_digest; pure) and what a load step makes of it. An onboarding's
 * validate step (and POST /v1/load_lora_adapter's validation) records the digest of the files the worker validated
 * (ValidateAdapter's ModelCard.digest): the job's reference until its load. The load step then records the digest of
 * what the workers loaded from the job's path (jobDigest): the fresh loads' when they agree (LoadAdapter's answers),
 * else the validated one; with none fresh (the step resumed after a gateway crash, every worker already loaded), the
 * validated one, else what those workers report when they agree. A worker that answered ALREADY_EXISTS may hold an
 * older job's adapter under the name (its link was down while the task was deleted and loaded again, perhaps from the
 * same path with files rewritten in place): heldOther tells, and the load step unloads and loads it again
 * (WorkerAdminService.loadEverywhere), then records what the workers serve (servedDigest). No digest known (older workers, which report none; fresh loads that read
 * different bytes, the files rewritten during the step, and no validated digest): null, and the catch-up compares
 * paths only.
 */

/** What one worker's load gave: whether it loaded (else ALREADY_EXISTS), and the digest it reports (undefined: none). */
export interface Loaded {
  readonly fresh: boolean;
  readonly digest: string | undefined;
}

/** The one digest `loaded` report, or null (none known, or they differ). */
function agreed(loaded: readonly Loaded[]): string | null {
  const known = new Set(loaded.flatMap((l) => (l.digest === undefined ? [] : [l.digest])));
  return known.size === 1 ? ([...known][0] as string) : null;
}

/**
 * The digest to record for a load step whose workers gave `loaded`, the job's reference (`validated`: the digest its
 * validation recorded, null if none), or null (unknown: path-only).
 */
export function jobDigest(loaded: readonly Loaded[], validated: string | null = null): string | null {
  const fresh = loaded.filter((l) => l.fresh);
  if (fresh.length > 0) return agreed(fresh) ?? validated;
  return validated ?? agreed(loaded);
}

/**
 * The digest a load step records once it has replaced the older adapters (heldOther) that workers held: the one digest
 * every worker in `loaded` reports, when they agree (what they serve: a replace that read files changed since the
 * validation, e.g. the only worker's, records what it read, not the validated digest), else `reference` (jobDigest).
 */
export function servedDigest(loaded: readonly Loaded[], reference: string | null): string | null {
  return agreed(loaded) ?? reference;
}

/** What a worker reports of the adapter it holds under a task's name: the LoadAdapter path and the digest, if any. */
export interface Held {
  readonly path: string | undefined;
  readonly digest: string | undefined;
}

/**
 * Whether a worker that answered a load of `path` with ALREADY_EXISTS holds another adapter under the name: one loaded
 * from another path, or from `path` with another digest than `reference` (jobDigest) when both are known. An adapter
 * with no LoadAdapter path (the worker's --adapters-dir, or a worker that predates adapter_paths) is its own: never.
 */
export function heldOther(held: Held, path: string, reference: string | null): boolean {
  if (held.path === undefined) return false;
  if (held.path !== path) return true;
  return reference !== null && held.digest !== undefined && held.digest !== reference;
}
