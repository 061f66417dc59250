/**
 * Per-key rate limits (token bucket: bursts up to `rpm`, refilled at rpm per minute) and concurrency limits
 * (leases in a sorted set), both in Redis through atomic Lua scripts. Redis unreachable -> fail open: the
 * request is served unlimited and a warning is logged at most every 10 s (availability over quota).
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { InlaidError } from '../common/inlaid-error';
import type { Principal } from '../auth/principal';
import { RedisService } from '../redis/redis.service';
import { ACQUIRE_SLOT, TOKEN_BUCKET } from './limit-scripts';

const REDIS_TIMEOUT_MS = 250;
const LEASE_TTL_MS = 10 * 60_000;
const WARN_EVERY_MS = 10_000;
export type Release = () => void;
const NOTHING: Release = () => undefined;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis did not answer in ${ms} ms`)), ms);
    p.then((v) => (clearTimeout(timer), resolve(v)), (e: unknown) => (clearTimeout(timer), reject(e)));
  });
}

@Injectable()
export class LimiterService {
  private readonly logger = new Logger('Limits');
  private lastWarn = 0;

  constructor(@Inject(RedisService) private readonly redis: RedisService) {}

  /** Takes one request from the key's budget and a concurrency slot; throws RESOURCE_EXHAUSTED when over. */
  async admit(p: Principal): Promise<Release> {
    if (p.rateLimitRpm === null && p.concurrencyLimit === null) return NOTHING;
    try {
      if (p.rateLimitRpm !== null) await this.takeToken(p.id, p.rateLimitRpm);
      return p.concurrencyLimit === null ? NOTHING : await this.acquireSlot(p.id, p.concurrencyLimit);
    } catch (err) {
      if (err instanceof InlaidError) throw err;
      this.failOpen(err);
      return NOTHING;
    }
  }

  private async takeToken(id: string, rpm: number): Promise<void> {
    const res = (await this.eval(TOKEN_BUCKET, `inlaid:rl:${id}`, [rpm, rpm / 60_000])) as [number, number];
    if (res[0] !== 1) {
      throw InlaidError.rateLimited(`Rate limit reached for this API key (${rpm} requests per minute).`, res[1] / 1000);
    }
  }

  private async acquireSlot(id: string, limit: number): Promise<Release> {
    const lease = randomUUID();
    const key = `inlaid:cc:${id}`;
    const ok = (await this.eval(ACQUIRE_SLOT, key, [limit, lease, LEASE_TTL_MS])) as number;
    if (ok !== 1) {
      throw InlaidError.rateLimited(`Too many concurrent requests for this API key (limit ${limit}).`, 1, 'concurrency_limit_exceeded');
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.redis.client.zrem(key, lease).catch(() => undefined); // else the lease expires after its ttl
    };
  }

  private eval(script: string, key: string, args: Array<string | number>): Promise<unknown> {
    if (!this.redis.connected) return Promise.reject(new Error('redis is not connected'));
    return withTimeout(this.redis.client.eval(script, 1, key, ...args.map(String)), REDIS_TIMEOUT_MS);
  }

  private failOpen(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarn < WARN_EVERY_MS) return;
    this.lastWarn = now;
    this.logger.warn(`limits not enforced (fail open): ${(err as Error).message}`);
  }
}
