/** The limit scripts against the real Redis on 127.0.0.1:6379 (keys are random and expire). */
import { status } from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/principal';
import { InlaidError } from '../common/inlaid-error';
import { RedisService } from '../redis/redis.service';
import { LimiterService } from './limiter.service';

let redis: RedisService;
let limiter: LimiterService;

beforeAll(async () => {
  redis = new RedisService({ redisUrl: 'redis://127.0.0.1:6379' } as never);
  await redis.onModuleInit();
  limiter = new LimiterService(redis);
});

afterAll(() => redis.onApplicationShutdown());

function principal(rpm: number | null, concurrency: number | null): Principal {
  return { id: `test-${randomUUID()}`, name: 't', scopes: new Set(['inference']), rateLimitRpm: rpm, concurrencyLimit: concurrency };
}

async function refusal(p: Principal): Promise<InlaidError> {
  const err = await limiter.admit(p).then(() => null, (e: unknown) => e);
  if (!(err instanceof InlaidError)) throw new Error('admitted');
  return err;
}

describe('LimiterService on Redis', () => {
  it('allows a burst of rpm requests, then refuses with RESOURCE_EXHAUSTED and a Retry-After', async () => {
    const p = principal(3, null);
    for (let i = 0; i < 3; i++) await limiter.admit(p);
    const err = await refusal(p);
    expect(err.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details.code).toBe('rate_limit_exceeded');
    expect(err.details.retryAfterS).toBeGreaterThanOrEqual(15);
    expect(err.details.retryAfterS).toBeLessThanOrEqual(20);
  });

  it('holds at most `concurrency` slots and frees one on release', async () => {
    const p = principal(null, 2);
    const r1 = await limiter.admit(p);
    await limiter.admit(p);
    expect((await refusal(p)).details.code).toBe('concurrency_limit_exceeded');
    r1();
    r1(); // releasing twice frees one slot only
    await new Promise((r) => setTimeout(r, 50));
    await limiter.admit(p);
    expect((await refusal(p)).status).toBe(status.RESOURCE_EXHAUSTED);
  });

  it('keeps limits atomic under concurrent admits', async () => {
    const p = principal(10, null);
    const results = await Promise.allSettled(Array.from({ length: 25 }, () => limiter.admit(p)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
  });

  it('fails open when Redis is unreachable', async () => {
    const dead = new RedisService({ redisUrl: 'redis://127.0.0.1:1' } as never);
    dead.client.on('error', () => undefined);
    const open = new LimiterService(dead);
    const release = await open.admit(principal(1, 1));
    await open.admit(principal(1, 1));
    release();
    dead.client.disconnect();
  });
});
