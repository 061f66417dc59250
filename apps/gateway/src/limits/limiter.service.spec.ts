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

async function refusal(p: Principal, cost = 1): Promise<InlaidError> {
  const err = await limiter.admit(p, cost).then(() => null, (e: unknown) => e);
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

  it('takes n rate-limit tokens for n choices, all or none', async () => {
    const p = principal(5, null);
    await limiter.admit(p, 3);
    const err = await refusal(p, 3); // 2 left
    expect(err.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details.code).toBe('rate_limit_exceeded');
    expect(err.message).toContain('counts 3 times, once per generation (n / best_of)');
    expect(err.details.retryAfterS).toBeGreaterThanOrEqual(11); // one more token at 5 per minute: 12 s
    expect(err.details.retryAfterS).toBeLessThanOrEqual(12);
    await limiter.admit(p, 2); // the refusal took nothing
    expect((await refusal(p)).details.code).toBe('rate_limit_exceeded');
  });

  it('holds n concurrency slots for n choices and frees them all on release', async () => {
    const p = principal(null, 4);
    const three = await limiter.admit(p, 3);
    expect((await refusal(p, 2)).details.code).toBe('concurrency_limit_exceeded');
    const one = await limiter.admit(p, 1); // the refusal took nothing
    expect((await refusal(p)).details.retryAfterS).toBe(1);
    three();
    await new Promise((r) => setTimeout(r, 50));
    const again = await limiter.admit(p, 3);
    expect((await refusal(p)).status).toBe(status.RESOURCE_EXHAUSTED);
    one();
    again();
    await new Promise((r) => setTimeout(r, 50));
    expect(await redis.client.zcard(`inlaid:cc:${p.id}`)).toBe(0);
  });

  it('spends no rate-limit tokens on a request refused for concurrency, and frees the slots of one refused for rate', async () => {
    const p = principal(4, 2);
    const held = await limiter.admit(p, 2);
    expect((await refusal(p, 2)).details.code).toBe('concurrency_limit_exceeded');
    held();
    await new Promise((r) => setTimeout(r, 50));
    const second = await limiter.admit(p, 2); // 2 tokens left: the refusal above spent none
    second();
    await new Promise((r) => setTimeout(r, 50));
    expect((await refusal(p, 1)).details.code).toBe('rate_limit_exceeded'); // no tokens left
    expect(await redis.client.zcard(`inlaid:cc:${p.id}`)).toBe(0); // its slot was handed back
  });

  it('refuses an n above the key\'s limit itself, taking nothing', async () => {
    const rate = principal(4, 8);
    const over = await refusal(rate, 5);
    expect(over.details.code).toBe('rate_limit_exceeded');
    expect(over.message).toContain('n / best_of (5)');
    expect(over.message).not.toContain("request's n (");
    expect(over.details.retryAfterS).toBe(60);
    const slots = principal(100, 2);
    const many = await refusal(slots, 3);
    expect(many.details.code).toBe('concurrency_limit_exceeded');
    expect(many.details.retryAfterS).toBe(1);
    await limiter.admit(rate, 4);
    await limiter.admit(slots, 2);
  });

  it('keeps limits atomic under concurrent admits', async () => {
    const p = principal(10, null);
    const results = await Promise.allSettled(Array.from({ length: 25 }, () => limiter.admit(p)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    const q = principal(10, 10);
    const costs = await Promise.allSettled(Array.from({ length: 12 }, () => limiter.admit(q, 3)));
    expect(costs.filter((r) => r.status === 'fulfilled')).toHaveLength(3); // 9 of 10 tokens and slots
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
