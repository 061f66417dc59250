/**
 * Turns an Authorization header into a Principal: bootstrap keys (INLAID_API_KEYS, every scope, no limits)
 * first, then hashed keys in Postgres (cached 5 s, so a revocation takes effect within 5 s). With auth off
 * (no bootstrap keys, INLAID_AUTH unset) every request is the anonymous admin. Keys are never logged.
 */
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { API_KEY_SCOPES, ApiKey } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { findActiveByHash } from './api-key-repo';
import { KeyCache } from './key-cache';
import { bearerKey, hashApiKey, sameDigest } from './key-material';
import type { Principal } from './principal';

const FRESH_MS = 5_000;
const STALE_MS = 10 * 60_000;
const MAX_CACHED = 10_000;
const ALL_SCOPES: Principal['scopes'] = new Set(API_KEY_SCOPES);
export const ANONYMOUS: Principal = { id: 'anonymous', name: 'anonymous', scopes: ALL_SCOPES, rateLimitRpm: null, concurrencyLimit: null };

function principalOf(row: ApiKey): Principal {
  return { id: row.id, name: row.name, scopes: new Set(row.scopes), rateLimitRpm: row.rateLimitRpm, concurrencyLimit: row.concurrencyLimit };
}

@Injectable()
export class Authenticator {
  private readonly logger = new Logger('Auth');
  private readonly bootstrap: ReadonlyArray<{ hash: string; principal: Principal }>;
  private readonly cache = new KeyCache<Principal>(FRESH_MS, STALE_MS, MAX_CACHED);
  readonly enabled: boolean;

  constructor(
    @Inject(GATEWAY_CONFIG) config: GatewayConfig,
    @Inject(DataSource) private readonly db: DataSource,
  ) {
    this.enabled = config.apiKeys.length > 0 || config.authRequired;
    this.bootstrap = config.apiKeys.map((key, i) => ({
      hash: hashApiKey(key),
      principal: { id: `bootstrap:${i}`, name: `bootstrap ${i}`, scopes: ALL_SCOPES, rateLimitRpm: null, concurrencyLimit: null },
    }));
  }

  /** Throws UNAUTHENTICATED (bad or missing key) or UNAVAILABLE (key store unreachable, key not cached). */
  async authenticate(header: string | undefined): Promise<Principal> {
    if (!this.enabled) return ANONYMOUS;
    if (header === undefined || header === '') {
      throw InlaidError.unauthenticated("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.");
    }
    const key = bearerKey(header);
    if (key === null) throw InlaidError.unauthenticated('Incorrect API key provided.');
    const hash = hashApiKey(key);
    let found: Principal | undefined;
    for (const b of this.bootstrap) if (sameDigest(b.hash, hash)) found = b.principal;
    const principal = found ?? (await this.lookup(hash));
    if (principal === null) throw InlaidError.unauthenticated('Incorrect API key provided.');
    return principal;
  }

  private async lookup(hash: string): Promise<Principal | null> {
    const now = Date.now();
    const cached = this.cache.fresh(hash, now);
    if (cached !== undefined) return cached.value;
    try {
      const row = await findActiveByHash(this.db, hash);
      const principal = row === null || !sameDigest(row.hash, hash) ? null : principalOf(row);
      this.cache.set(hash, principal, now);
      return principal;
    } catch (err) {
      const stale = this.cache.stale(hash, now);
      if (stale !== null) return stale;
      this.logger.warn(`key store unreachable: ${(err as Error).message}`);
      throw InlaidError.unavailable('The API key store is unreachable; retry shortly.');
    }
  }
}
