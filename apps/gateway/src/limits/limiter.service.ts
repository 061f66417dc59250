/**
 * Per-key rate limits (token bucket: bursts up to `rpm`, refilled at rpm per minute) and concurrency limits
 * (leases in a sorted set), both in Redis through atomic Lua scripts. Redis unreachable -> fail open: the
 * request is served unlimited and a warning is logged at most every 10 s (availability over quota).
 * A request running several generations (`n` choices, or completions' `best_of` candidates when best_of > n)
 * counts once per generation: that many tokens and slots, all or none.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { InlaidError } from '../common/inlaid-error';
import { withTimeout } from '../common/with-timeout';
import type { Principal } from '../auth/principal';
import { RedisService } from '../redis/redis.service';
import { ACQUIRE_SLOT, TOKEN_BUCKET } from './limit-scripts';

const REDIS_TIMEOUT_MS = 250;
const LEASE_TTL_MS = 10 * 60_000;
const WARN_EVERY_MS = 10_000;
export type Release = () => void;
const NOTHING: Release = () => undefined;

function counted(cost: number): string {
  return cost > 1 ? `; this request counts ${cost} times, once per generation (n / best_of)` : '';
}

/** A request whose n / best_of is above the key's limit itself can never be admitted: say so, without touching Redis. */
function checkCost(p: Principal, cost: number): void {
  if (!Number.isInteger(cost) || cost < 1) throw new Error(`a request costs a positive integer, got ${cost}`);
  if (p.rateLimitRpm !== null && cost > p.rateLimitRpm) {
    throw InlaidError.rateLimited(
      `This request's n / best_of (${cost}) is more than this API key's rate limit of ${p.rateLimitRpm} requests per minute; each generation (choice or best_of candidate) counts as a request.`,
      60,
    );
  }
  if (p.concurrencyLimit !== null && cost > p.concurrencyLimit) {
    throw InlaidError.rateLimited(
      `This request's n / best_of (${cost}) is more than this API key's limit of ${p.concurrencyLimit} concurrent requests; each generation (choice or best_of candidate) counts as a request.`,
      1,
      'concurrency_limit_exceeded',
    );
  }
}

@Injectable()
export class LimiterService {
  private readonly logger = new Logger('Limits');
  private lastWarn = 0;

  constructor(@Inject(RedisService) private readonly redis: RedisService) {}

  /**
   * Takes `cost` requests (a request's `n`) from the key's budget and as many concurrency slots, released
   * together by the returned function; throws RESOURCE_EXHAUSTED (with a retry-after) when the key has fewer
   * left, taking nothing. Slots come first: they can be handed back when the rate limit refuses (tokens cannot),
   * so a request refused for concurrency does not spend n of the key's requests per minute.
   */
  async admit(p: Principal, cost = 1): Promise<Release> {
    if (p.rateLimitRpm === null && p.concurrencyLimit === null) return NOTHING;
    checkCost(p, cost);
    try {
      const release = p.concurrencyLimit === null ? NOTHING : await this.acquireSlots(p.id, p.concurrencyLimit, cost);
      if (p.rateLimitRpm !== null) await this.takeTokens(p.id, p.rateLimitRpm, cost).catch((err: unknown) => (release(), Promise.reject(err)));
      return release;
    } catch (err) {
      if (err instanceof InlaidError) throw err;
      this.failOpen(err);
      return NOTHING;
    }
  }

  private async takeTokens(id: string, rpm: number, cost: number): Promise<void> {
    const res = (await this.eval(TOKEN_BUCKET, `inlaid:rl:${id}`, [rpm, rpm / 60_000, cost])) as [number, number];
    if (res[0] !== 1) {
      throw InlaidError.rateLimited(`Rate limit reached for this API key (${rpm} requests per minute${counted(cost)}).`, res[1] / 1000);
    }
  }

  private async acquireSlots(id: string, limit: number, cost: number): Promise<Release> {
    const lease = randomUUID();
    const key = `inlaid:cc:${id}`;
    const ok = (await this.eval(ACQUIRE_SLOT, key, [limit, lease, LEASE_TTL_MS, cost])) as number;
    if (ok !== 1) {
      throw InlaidError.rateLimited(
        `Too many concurrent requests for this API key (limit ${limit}${counted(cost)}).`,
        1,
        'concurrency_limit_exceeded',
      );
    }
    const leases = Array.from({ length: cost }, (_, i) => `${lease}:${i + 1}`);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.redis.client.zrem(key, ...leases).catch(() => undefined); // else the leases expire after their ttl
    };
  }

  private eval(script: string, key: string, args: Array<string | number>): Promise<unknown> {
    if (!this.redis.connected) return Promise.reject(new Error('redis is not connected'));
    return withTimeout(this.redis.client.eval(script, 1, key, ...args.map(String)), REDIS_TIMEOUT_MS, () => new Error(`redis did not answer in ${REDIS_TIMEOUT_MS} ms`));
  }

  private failOpen(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarn < WARN_EVERY_MS) return;
    this.lastWarn = now;
    this.logger.warn(`limits not enforced (fail open): ${(err as Error).message}`);
  }
}
