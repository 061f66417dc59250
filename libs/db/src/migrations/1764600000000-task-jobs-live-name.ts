/**
 * At most one live onboard/load job per task name (a partial unique index), so that of two concurrent
 * creations of the same new name only one row goes in and the other insert fails (23505 on this index). A
 * job leaves the index when it fails or is deleted, so the name is reusable then. Live duplicates left by
 * earlier versions (concurrent POSTs could all pass the gateway's check) are kept as history: all but the
 * newest per name are marked failed first.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const INDEX = 'idx_task_jobs_live_task';

/** Frozen here: the statuses of a job whose task still holds its name (tasks.service.ts's LIVE). */
const LIVE = `"kind" IN ('onboard', 'load') AND "status" IN ('queued', 'validating', 'loading', 'quantizing', 'activating', 'active', 'serving')`;
const SUPERSEDED = 'superseded: a later job created the same task name concurrently';

export class TaskJobsLiveName1764600000000 implements MigrationInterface {
  name = 'TaskJobsLiveName1764600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      WITH ranked AS (
        SELECT "id", row_number() OVER (PARTITION BY "task" ORDER BY "created_at" DESC, "id" DESC) AS n
        FROM "task_jobs" WHERE ${LIVE}
      )
      UPDATE "task_jobs" j SET "status" = 'failed', "error" = $1, "updated_at" = now(),
        "history" = j."history" || jsonb_build_array(jsonb_build_object(
          'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'status', 'failed', 'message', $1::text))
      FROM ranked r WHERE j."id" = r."id" AND r.n > 1`, [SUPERSEDED]);
    await q.query(`CREATE UNIQUE INDEX "${INDEX}" ON "task_jobs" ("task") WHERE ${LIVE}`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "${INDEX}"`);
  }
}
