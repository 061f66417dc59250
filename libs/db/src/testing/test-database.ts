/**
 * For specs (this library's, and the gateway's as `@inlaid/db/testing`: tsconfig.base.json paths, jest.config.js
 * moduleNameMapper; not built): a migrated database of a spec file's own on the real Postgres, and migrations undone.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { openDatabase } from '../data-source';
import { dropDatabase } from '../ensure-database';

/** Opens `<prefix>_<random>` before the spec file's tests and drops it after them; the returned function gives it. */
export function testDatabase(prefix: string): () => DataSource {
  const url = `postgres://postgres@127.0.0.1:5432/${prefix}_${randomBytes(4).toString('hex')}`;
  let ds: DataSource | undefined;
  beforeAll(async () => {
    ds = await openDatabase(url);
  });
  afterAll(async () => {
    await ds?.destroy();
    await dropDatabase(url);
  });
  return () => {
    if (ds === undefined) throw new Error('the test database opens in beforeAll');
    return ds;
  };
}

/** The schema as it was before migration `name` (later migrations are undone first). */
export async function undoThrough(ds: DataSource, name: string): Promise<void> {
  const applied = async (): Promise<boolean> => (await ds.query(`SELECT 1 FROM "migrations" WHERE "name" = $1`, [name])).length > 0;
  if (!(await applied())) throw new Error(`migration ${name} is not applied`);
  while (await applied()) await ds.undoLastMigration();
}
