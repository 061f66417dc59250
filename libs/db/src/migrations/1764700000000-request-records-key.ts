/**
 * request_records get a key of their own (record_id, a uuid) as primary key; the request id becomes an indexed column
 * that may recur. Before, the id was the key and rows were insert-or-ignore: a client reusing a finished request's
 * request_id (allowed: ids are unique only among running requests) had its later record silently dropped. The gateway
 * gives each record its key when it buffers it (records.service.ts), so a retried batch that was in fact written is
 * still written once; rows inserted without one get the column default. Existing rows each get a fresh key (the table
 * is rewritten once). Down keeps the earliest-arriving row of each id (the others are deleted; rollups keep counting them).
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

export class RequestRecordsKey1764700000000 implements MigrationInterface {
  name = 'RequestRecordsKey1764700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "request_records" ADD COLUMN "record_id" uuid NOT NULL DEFAULT gen_random_uuid()`);
    await q.query(`ALTER TABLE "request_records" DROP CONSTRAINT "request_records_pkey", ADD CONSTRAINT "request_records_pkey" PRIMARY KEY ("record_id")`);
    await q.query(`CREATE INDEX "idx_request_records_id" ON "request_records" ("id")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DELETE FROM "request_records" r USING "request_records" e
      WHERE r."id" = e."id" AND (r."arrival", r."record_id") > (e."arrival", e."record_id")`);
    await q.query(`DROP INDEX "idx_request_records_id"`);
    await q.query(`ALTER TABLE "request_records" DROP CONSTRAINT "request_records_pkey", ADD CONSTRAINT "request_records_pkey" PRIMARY KEY ("id")`);
    await q.query(`ALTER TABLE "request_records" DROP COLUMN "record_id"`);
  }
}
