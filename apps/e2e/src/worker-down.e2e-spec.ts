/**
 * The gateway with no worker reachable: every generation answers 503 (gRPC UNAVAILABLE) fast, the health
 * probes say alive-but-not-ready, API keys are enforced in OpenAI's error shape, refusals are recorded.
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import { RequestRecord } from '@inlaid/db';
import OpenAI from 'openai';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { generate, inferenceClient, listModels } from './support/grpc-clients';
import { freePort } from './support/ports';

jest.setTimeout(60_000);

const KEY = 'sk-test-key';
let h: Harness;
let client: OpenAI;

beforeAll(async () => {
  h = await startHarness({ WORKER_ADDRS: `127.0.0.1:${await freePort()}`, INLAID_API_KEYS: `other,${KEY}` });
  client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: KEY, maxRetries: 0, timeout: 5000 });
});

afterAll(async () => {
  await h?.close();
});

async function timed<T>(fn: () => Promise<T>): Promise<[T | unknown, number]> {
  const t0 = performance.now();
  try {
    return [await fn(), performance.now() - t0];
  } catch (err) {
    return [err, performance.now() - t0];
  }
}

describe('with the worker down', () => {
  it('answers completions, chat and models with 503 in well under a second', async () => {
    const calls: Array<() => Promise<unknown>> = [
      () => client.completions.create({ model: 'sql', prompt: 'hi' }),
      () => client.chat.completions.create({ model: 'sql', messages: [{ role: 'user', content: 'hi' }], stream: true }),
      () => client.models.list(),
    ];
    for (const call of calls) {
      const [err, ms] = await timed(call);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
      expect((err as InstanceType<typeof OpenAI.APIError>).type).toBe('service_unavailable_error');
      expect(ms).toBeLessThan(1000);
    }
  });

  it('answers gRPC Generate and ListModels with UNAVAILABLE fast', async () => {
    const grpc = inferenceClient(h.gateway.grpcAddr);
    const md = new Metadata();
    md.set('authorization', `Bearer ${KEY}`);
    const [err, ms] = await timed(() => generate(grpc, { model: 'sql', prompt: 'hi' }, md));
    expect((err as ServiceError).code).toBe(status.UNAVAILABLE);
    expect(ms).toBeLessThan(1000);
    await expect(listModels(grpc, md)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    grpc.close();
  });

  it('is alive but not ready', async () => {
    expect((await fetch(`${h.gateway.httpUrl}/healthz`)).status).toBe(200);
    const ready = await fetch(`${h.gateway.httpUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { workers: Array<{ ready: boolean }> }).workers[0]?.ready).toBe(false);
  });

  it('rejects missing or wrong API keys with 401 / UNAUTHENTICATED', async () => {
    const res = await fetch(`${h.gateway.httpUrl}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'sql', prompt: 'x' }),
    });
    expect(res.status).toBe(401);
    const body = (await res.json()) as { error: { type: string; code: string; param: null } };
    expect(body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key', param: null });

    const wrong = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'nope', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    const grpc = inferenceClient(h.gateway.grpcAddr);
    await expect(listModels(grpc)).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    grpc.close();
  });

  it('rejects bad parameters before looking for a worker', async () => {
    const err = await client.completions.create({ model: 'sql', prompt: 'x', n: 17 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('n');
  });

  it('answers n > 1 with 503 like a single choice, streamed or not', async () => {
    for (const stream of [false, true]) {
      const [err, ms] = await timed(() => client.completions.create({ model: 'sql', prompt: 'x', n: 2, stream }));
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
      expect(ms).toBeLessThan(1000);
    }
  });

  it('records the refused requests in Postgres', async () => {
    const rows = await waitFor(async () => {
      const found = await h.db.getRepository(RequestRecord).find();
      return found.length >= 3 ? found : undefined;
    }, 3000, 'request records');
    expect(rows.every((r) => r.status === 'rejected' && r.task === 'sql' && r.finish !== null)).toBe(true);
    expect(rows.map((r) => r.api).sort()).toEqual(expect.arrayContaining(['chat.completions', 'completions', 'grpc']));
  });
});
