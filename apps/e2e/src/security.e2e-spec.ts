/**
 * Keys, scopes, limits and hostile input at the edge (no worker needed: requests that pass the edge get
 * 503). Keys are created with the keys CLI against the harness database; limits live in the shared Redis.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Client, credentials, Metadata, ServiceError, status } from '@grpc/grpc-js';
import { ApiKey } from '@inlaid/db';
import { JsonLogger } from '../../gateway/src/logging/json-logger';
import { Harness, startHarness } from './support/gateway-harness';
import { generate, inferenceClient, listModels } from './support/grpc-clients';
import { freePort } from './support/ports';
import { REPO } from './support/python-worker';

jest.setTimeout(60_000);

const ADMIN = `boot-${randomBytes(8).toString('hex')}`;
let h: Harness;

beforeAll(async () => {
  h = await startHarness({ WORKER_ADDRS: `127.0.0.1:${await freePort()}`, INLAID_API_KEYS: ADMIN });
});

afterAll(async () => {
  await h?.close();
});

async function keysCli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)('node', ['apps/gateway/dist/keys-cli/main.js', ...args], {
    cwd: REPO,
    env: { ...process.env, DATABASE_URL: h.databaseUrl },
  });
}

async function createKey(...args: string[]): Promise<{ id: string; key: string; prefix: string }> {
  const { stdout } = await keysCli('create', ...args);
  return JSON.parse(stdout) as { id: string; key: string; prefix: string };
}

async function post(path: string, body: unknown, key?: string, raw?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== undefined) headers['authorization'] = `Bearer ${key}`;
  const res = await fetch(`${h.gateway.httpUrl}${path}`, { method: 'POST', headers, body: raw ?? JSON.stringify(body) });
  const json = (await res.json()) as { error?: { type: string; code: string | null; param: string | null; message: string } };
  return { status: res.status, error: json.error, retryAfter: res.headers.get('retry-after') };
}

const md = (key: string) => {
  const m = new Metadata();
  m.set('authorization', `Bearer ${key}`);
  return m;
};

describe('API keys from the CLI', () => {
  it('stores only a hash and a prefix, and the key authenticates', async () => {
    const k = await createKey('--name', 'infer', '--scopes', 'inference');
    const row = await h.db.getRepository(ApiKey).findOneByOrFail({ id: k.id });
    expect(row.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(row)).not.toContain(k.key);
    expect(k.key.startsWith(row.prefix)).toBe(true);
    const { stdout } = await keysCli('list', '--json');
    expect(stdout).not.toContain(k.key);
    expect(stdout).toContain(row.prefix);
    expect((await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key)).status).toBe(503); // past the edge
  });

  it('refuses a revoked key with 401', async () => {
    const k = await createKey('--name', 'gone', '--scopes', 'inference');
    await keysCli('revoke', k.id);
    const r = await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key);
    expect(r.status).toBe(401);
    expect(r.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
  });

  it('refuses bad CLI input without touching the database', async () => {
    await expect(keysCli('create', '--name', 'x', '--scopes', 'root')).rejects.toMatchObject({ code: 2 });
  });
});

describe('scopes', () => {
  it('answers 403 permission_error on HTTP and PERMISSION_DENIED on gRPC for a key without the scope', async () => {
    const k = await createKey('--name', 'dash', '--scopes', 'dashboard:read');
    const r = await post('/v1/chat/completions', { model: 'sql', messages: [{ role: 'user', content: 'x' }] }, k.key);
    expect(r.status).toBe(403);
    expect(r.error).toMatchObject({ type: 'permission_error', code: 'insufficient_scope' });
    const grpc = inferenceClient(h.gateway.grpcAddr);
    await expect(generate(grpc, { model: 'sql', prompt: 'x' }, md(k.key))).rejects.toMatchObject({ code: status.PERMISSION_DENIED });
    await expect(listModels(grpc, md('sk-inlaid-wrong'))).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    grpc.close();
  });

  it('keeps the bootstrap INLAID_API_KEYS working with every scope', async () => {
    expect((await post('/v1/completions', { model: 'sql', prompt: 'x' }, ADMIN)).status).toBe(503);
  });
});

describe('per-key limits', () => {
  it('answers 429 with Retry-After past the rate limit, and RESOURCE_EXHAUSTED on gRPC', async () => {
    const k = await createKey('--name', 'slow', '--scopes', 'inference', '--rpm', '2');
    expect((await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key)).status).toBe(503);
    expect((await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key)).status).toBe(503);
    const r = await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key);
    expect(r.status).toBe(429);
    expect(r.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
    const grpc = inferenceClient(h.gateway.grpcAddr);
    const err = (await generate(grpc, { model: 'sql', prompt: 'x' }, md(k.key)).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.metadata.get('retry-after')[0]).toBeDefined();
    grpc.close();
  });
});

describe('bounded input', () => {
  it('answers 413 in OpenAI shape for a body over 1 MiB', async () => {
    const r = await post('/v1/completions', null, ADMIN, JSON.stringify({ model: 'sql', prompt: 'x'.repeat(1.1 * (1 << 20)) }));
    expect(r.status).toBe(413);
    expect(r.error).toMatchObject({ type: 'invalid_request_error', code: 'request_too_large' });
  });

  it.each([
    [{ model: 'sql', prompt: 'x'.repeat(300_000) }, 'prompt'],
    [{ model: 'sql', prompt: 'x', max_tokens: 10_000_000 }, 'max_tokens'],
    [{ model: 'sql', prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    [{ model: 'sql', prompt: 'x', n: 17 }, 'n'],
    [{ model: 'sql', prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ model: 'sql', prompt: 'x', stop: ['y'.repeat(1000)] }, 'stop'],
    [{ model: 'sql', prompt: 'x', stop_token_ids: new Array(100).fill(1) }, 'stop_token_ids'],
    [{ model: 'sql', prompt: 'x', temperature: 9 }, 'temperature'],
    [{ model: 'sql', prompt: 'x', top_p: -0.1 }, 'top_p'],
    [{ model: 'sql', prompt: 'x', top_k: 1e9 }, 'top_k'],
    [{ model: 'sql', prompt: 'x', seed: 1.5 }, 'seed'],
    [{ model: '../../etc/passwd', prompt: 'x' }, 'model'],
    [{ model: "sql'; DROP TABLE request_records;--", prompt: 'x' }, 'model'],
    [{ model: 'sql', prompt: ['a', 'b'] }, 'prompt'],
    [{ model: 'sql', prompt: { $gt: '' } }, 'prompt'],
  ])('refuses %# with 400 naming the parameter', async (body, param) => {
    const r = await post('/v1/completions', body, ADMIN);
    expect(r.status).toBe(400);
    expect(r.error?.param).toBe(param);
  });

  it('refuses chat with too many messages, and non-JSON bodies', async () => {
    const messages = new Array(300).fill({ role: 'user', content: 'x' });
    expect((await post('/v1/chat/completions', { model: 'sql', messages }, ADMIN)).error?.param).toBe('messages');
    expect((await post('/v1/completions', null, ADMIN, '{"model":')).status).toBe(400);
  });

  it('refuses malformed gRPC messages with INVALID_ARGUMENT (or a validation error), and keeps serving', async () => {
    const client = new Client(h.gateway.grpcAddr, credentials.createInsecure());
    const seen = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const bytes = randomBytes(1 + ((i * 37) % 300));
      const code = await new Promise<number>((resolve) => {
        const method = i % 2 === 0 ? '/inlaid.v1.Inference/Generate' : '/inlaid.v1.Inference/ListModels';
        const ser = (b: Buffer) => b;
        const de = (b: Buffer) => b;
        if (i % 2 === 0) {
          const call = client.makeServerStreamRequest(method, ser, de, bytes, md(ADMIN));
          call.on('data', () => undefined);
          call.on('error', (e: ServiceError) => resolve(e.code));
          call.on('end', () => resolve(status.OK));
        } else {
          client.makeUnaryRequest(method, ser, de, bytes, md(ADMIN), (e) => resolve(e?.code ?? status.OK));
        }
      });
      seen.add(code);
    }
    client.close();
    expect([...seen].every((c) => [status.INVALID_ARGUMENT, status.UNAVAILABLE, status.NOT_FOUND].includes(c))).toBe(true);
    expect(seen.has(status.INVALID_ARGUMENT)).toBe(true);
    expect((await fetch(`${h.gateway.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe('secrets in logs', () => {
  it('never writes an API key (valid, bootstrap or wrong) to the gateway log', async () => {
    const k = await createKey('--name', 'logged', '--scopes', 'inference');
    const wrong = `sk-inlaid-${randomBytes(16).toString('hex')}`;
    const written: string[] = [];
    const spies = [process.stdout, process.stderr].map((stream) =>
      jest.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
        written.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
        return true;
      }),
    );
    h.gateway.app.useLogger(new JsonLogger(['log', 'warn', 'error'])); // request lines are logged at 'log'
    try {
      await post('/v1/completions', { model: 'sql', prompt: 'x' }, k.key); // 503: reaches generation, logged
      await post('/v1/completions', { model: 'sql', prompt: 'x' }, ADMIN);
      await post('/v1/completions', { model: 'sql', prompt: 'x' }, wrong); // 401
      await post('/v1/chat/completions', { model: 'sql', messages: 'bad' }, k.key); // 400
      await new Promise((r) => setTimeout(r, 1000)); // request records (and their log lines) are flushed in batches
    } finally {
      spies.forEach((s) => s.mockRestore());
      h.gateway.app.useLogger(new JsonLogger(['warn', 'error']));
    }
    const log = written.join('');
    expect(log.length).toBeGreaterThan(0); // the gateway did log these requests
    for (const secret of [k.key, ADMIN, wrong]) expect(log).not.toContain(secret);
  });
});
