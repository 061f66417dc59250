/** API key rows in Postgres (create / list / revoke / find by hash), shared by the gateway and the keys CLI. */
import { ApiKey, type ApiKeyScope } from '@inlaid/db';
import { DataSource, IsNull } from 'typeorm';
import { generateApiKey } from './key-material';

export interface KeySpec {
  readonly name: string;
  readonly scopes: readonly ApiKeyScope[];
  readonly rateLimitRpm: number | null;
  readonly concurrencyLimit: number | null;
}

/** Stores a new key and returns the row with the plaintext key, which is never stored or shown again. */
export async function createApiKey(db: DataSource, spec: KeySpec): Promise<{ row: ApiKey; key: string }> {
  const { key, hash, prefix } = generateApiKey();
  const repo = db.getRepository(ApiKey);
  const row = await repo.save(repo.create({ ...spec, scopes: [...spec.scopes], hash, prefix, revokedAt: null }));
  return { row, key };
}

export function listApiKeys(db: DataSource): Promise<ApiKey[]> {
  return db.getRepository(ApiKey).find({ order: { createdAt: 'ASC' } });
}

/** Revokes by id or by display prefix; returns how many keys it revoked (0 or 1; ambiguous prefixes throw). */
export async function revokeApiKey(db: DataSource, idOrPrefix: string): Promise<number> {
  const repo = db.getRepository(ApiKey);
  const isUuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(idOrPrefix);
  const matches = await repo.find({ where: isUuid ? { id: idOrPrefix, revokedAt: IsNull() } : { prefix: idOrPrefix, revokedAt: IsNull() } });
  if (matches.length > 1) throw new Error(`prefix ${idOrPrefix} matches ${matches.length} keys; revoke by id`);
  const row = matches[0];
  if (row === undefined) return 0;
  await repo.update({ id: row.id }, { revokedAt: new Date() });
  return 1;
}

/** The live (unrevoked) key with this hash, if any. Parameterized: the hash never reaches SQL text. */
export function findActiveByHash(db: DataSource, hash: string): Promise<ApiKey | null> {
  return db.getRepository(ApiKey).findOne({ where: { hash, revokedAt: IsNull() } });
}
