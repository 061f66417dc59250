/** Initial schema: tasks and request_records. */
import { MigrationInterface, QueryRunner } from 'typeorm';

export class Init1735000000000 implements MigrationInterface {
  name = 'Init1735000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "tasks" (
        "name" text PRIMARY KEY,
        "adapter_location" text,
        "rank" integer NOT NULL,
        "target_modules" text[] NOT NULL DEFAULT '{}',
        "status" text NOT NULL DEFAULT 'registered',
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE "request_records" (
        "id" text PRIMARY KEY,
        "task" text NOT NULL,
        "api" text NOT NULL,
        "arrival" timestamptz NOT NULL,
        "first_token" timestamptz,
        "finish" timestamptz,
        "tokens_in" integer NOT NULL DEFAULT 0,
        "tokens_out" integer NOT NULL DEFAULT 0,
        "status" text NOT NULL,
        "finish_reason" text,
        "error" text,
        "worker" text
      )`);
    await q.query(`CREATE INDEX "idx_request_records_task" ON "request_records" ("task")`);
    await q.query(`CREATE INDEX "idx_request_records_arrival" ON "request_records" ("arrival")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "request_records"`);
    await q.query(`DROP TABLE "tasks"`);
  }
}
