/**
 * task_jobs.adapter_digest: the content digest of the adapter a job's load step (or activate step) loaded onto the
 * workers (WorkerInfo.adapter_digests, worker.proto: sha256 of the files the workers read, 64 lowercase hex), so that
 * the adapter catch-up can tell an adapter rewritten in place at the same path (apps/gateway/src/tasks/
 * missing-adapters.ts). Nullable: rows written before, jobs loaded by workers that report no digest, and a load whose
 * workers read different bytes stay NULL (path-only comparison). A CHECK keeps a value written in SQL to the format
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
