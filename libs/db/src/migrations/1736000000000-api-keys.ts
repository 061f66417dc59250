/** API keys (hashed), with scopes and per-key rate and concurrency limits. */
import { MigrationInterface, QueryRunner } from 'typeorm';

export class ApiKeys1736000000000 implements MigrationInterface {
  name = 'ApiKeys1736000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_keys" (
        "id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        "name" text NOT NULL,
        "hash" text NOT NULL,
        "prefix" text NOT NULL,
        "scopes" text[] NOT NULL DEFAULT '{}',
        "rate_limit_rpm" integer CHECK ("rate_limit_rpm" IS NULL OR "rate_limit_rpm" > 0),
        "concurrency_limit" integer CHECK ("concurrency_limit" IS NULL OR "concurrency_limit" > 0),
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "revoked_at" timestamptz
      )`);
    await q.query(`CREATE UNIQUE INDEX "idx_api_keys_hash" ON "api_keys" ("hash")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_keys"`);
  }
}
