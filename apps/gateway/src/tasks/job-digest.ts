/**
 * The adapter digest a job's load step records (task_jobs.adapter_digest; pure): what the workers report of the bytes
 * they loaded from the job's path. Only fresh loads count when there are any (LoadAdapter's answers): a worker that
 * answered ALREADY_EXISTS may hold an older adapter under the name (its link was down while the task was replaced),
 * which the catch-up then replaces at its next Session. With none fresh (the step resumed after a gateway crash,
 * every worker already loaded), what those workers report counts. The digests counted must agree: workers that read
 * different bytes (the files were rewritten during the step) leave it null, as does a fleet of workers reporting none
 * (older ones), and the catch-up then compares paths only.
 */

/** What one worker's load gave: whether it loaded (else ALREADY_EXISTS), and the digest it reports (undefined: none). */
export interface Loaded {
  readonly fresh: boolean;
  readonly digest: string | undefined;
}

/** The digest to record for a load step whose workers gave `loaded`, or null (unknown: path-only). */
export function jobDigest(loaded: readonly Loaded[]): string | null {
  const counted = loaded.some((l) => l.fresh) ? loaded.filter((l) => l.fresh) : loaded;
  const known = new Set(counted.flatMap((l) => (l.digest === undefined ? [] : [l.digest])));
  return known.size === 1 ? ([...known][0] as string) : null;
}
