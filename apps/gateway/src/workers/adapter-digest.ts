/**
 * An adapter's content digest as a worker reports it (WorkerInfo.adapter_digests, LoadAdapter's ModelCard.digest):
 * sha256 of the adapter files it read, 64 lowercase hex (worker.proto; task_jobs.adapter_digest holds the same format).
 * Anything else (empty: an older worker, or an adapter not loaded through LoadAdapter) is no digest: the catch-up then
 * compares paths only.
 */
const DIGEST = /^[0-9a-f]{64}$/;

/** `reported` when it is a digest, else undefined (unknown). */
export function asDigest(reported: string | undefined): string | undefined {
  return reported !== undefined && DIGEST.test(reported) ? reported : undefined;
}
