/** task_jobs: onboarding jobs of tasks (stage, progress per stage and layer, error, checkpoint version). */
import { MigrationInterface, QueryRunner } from 'typeorm';

export class TaskJobs1764400000000 implements MigrationInterface {
  name = 'TaskJobs1764400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "task_jobs" (
        "id" text PRIMARY KEY,
        "task" text NOT NULL,
        "kind" text NOT NULL,
        "status" text NOT NULL,
        "adapter_path" text,
        "calibration_path" text,
        "slo" jsonb,
        "wait_for_quantization" boolean NOT NULL DEFAULT false,
        "progress" jsonb NOT NULL DEFAULT '{"stages":{},"layers":[]}',
        "error" text,
        "checkpoint_version" integer,
        "history" jsonb NOT NULL DEFAULT '[]',
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`CREATE INDEX "idx_task_jobs_task" ON "task_jobs" ("task", "created_at")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "task_jobs"`);
  }
}
