/**
 * task_jobs.adapter_digest: the content digest of a job's adapter (WorkerInfo.adapter_digests, worker.proto: sha256
 * of the adapter files, 64 lowercase hex), recorded from the validate step on (the files it validated), then by the
 * load step (or activate step): what the workers serve, falling back to the validated digest when they disagree or
 * report none; so that the adapter catch-up can tell an adapter rewritten in place at the same path
 * (apps/gateway/src/tasks/missing-adapters.ts). Nullable: rows written before, and jobs whose workers report no
 * digest and that no digest-reporting validation saw, stay NULL (path-only comparison). A CHECK keeps a value written in SQL to the format
 * the gateway compares. Adding a nullable column without a default rewrites no row; the ALTER waits at most
 * LOCK_TIMEOUT for its lock (a busy writer of task_jobs must not queue every reader behind it): past it the migration
 * fails and can be run again. Down drops the column.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const LOCK_TIMEOUT = '5s';
const CHECK = '"task_jobs_adapter_digest_format"';

export class TaskJobsAdapterDigest1764900000000 implements MigrationInterface {
  name = 'TaskJobsAdapterDigest1764900000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await q.query(`ALTER TABLE "task_jobs" ADD COLUMN "adapter_digest" text,
      ADD CONSTRAINT ${CHECK} CHECK ("adapter_digest" IS NULL OR "adapter_digest" ~ '^[0-9a-f]{64}$')`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await q.query(`ALTER TABLE "task_jobs" DROP COLUMN "adapter_digest"`);
  }
}
