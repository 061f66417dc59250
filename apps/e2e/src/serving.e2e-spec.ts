/**
 * THE end-to-end test: a real Python worker (tiny random Llama + two random LoRA adapters), the real gateway
 * against a fresh Postgres database, driven by the official `openai` client and by @grpc/grpc-js.
 */
import { status } from '@grpc/grpc-js';
import { RequestRecord, Task } from '@inlaid/db';
import { common } from '@inlaid/proto';
import { rmSync } from 'node:fs';
import OpenAI from 'openai';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { generate, getInfo, inferenceClient, listModels, workerClient } from './support/grpc-clients';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';

jest.setTimeout(240_000);

// Extensions beyond OpenAI's schema, passed through the client untyped.
const IGNORE_EOS = { ignore_eos: true } as object;
let fixture: TinyFixture;
let port: number;
let worker: WorkerProcess;
let h: Harness;
let client: OpenAI;

beforeAll(async () => {
  fixture = await makeTinyFixture();
  port = await freePort();
  worker = await startWorker(fixture, port);
  h = await startHarness({ WORKER_ADDRS: worker.addr });
  client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
});

afterAll(async () => {
  await worker?.kill();
  await h?.close();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

async function streamCompletion(model: string, maxTokens: number) {
  const stream = await client.completions.create({ model, prompt: 'The capital of', max_tokens: maxTokens, temperature: 0, stream: true, ...IGNORE_EOS });
  const times: number[] = [];
  let text = '';
  let finish: string | null = null;
  for await (const chunk of stream) {
    times.push(performance.now());
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { text, finish, first: times[0] ?? 0, last: times[times.length - 1] ?? 0, chunks: times.length };
}

describe('serving a tiny model with two adapters', () => {
  it('lists the base model and both adapters, adapters with a parent', async () => {
    const models = (await client.models.list()).data as unknown as Array<{ id: string; parent: string | null }>;
    const base = models.find((m) => m.parent === null);
    expect(base).toBeDefined();
    expect(models.filter((m) => m.parent === base?.id).map((m) => m.id).sort()).toEqual(['poet', 'sql']);
  });

  it('streams two adapters in flight at once, each matching its non-streamed greedy output', async () => {
    const [sql, poet] = await Promise.all([streamCompletion('sql', 48), streamCompletion('poet', 48)]);
    for (const s of [sql, poet]) {
      expect(s.finish).toBe('length');
      expect(s.chunks).toBeGreaterThan(2);
    }
    expect(sql.first).toBeLessThan(poet.last);
    expect(poet.first).toBeLessThan(sql.last);
    const whole = await client.completions.create({ model: 'sql', prompt: 'The capital of', max_tokens: 48, temperature: 0, ...IGNORE_EOS });
    expect(whole.object).toBe('text_completion');
    expect(whole.choices[0]?.text).toBe(sql.text);
    expect(whole.choices[0]?.finish_reason).toBe('length');
    expect(whole.usage?.completion_tokens).toBe(48);
    expect(whole.usage?.total_tokens).toBe((whole.usage?.prompt_tokens ?? 0) + 48);
  });

  it('serves chat completions, streamed with usage and not', async () => {
    const messages = [{ role: 'user' as const, content: 'Hello, how are you?' }];
    const whole = await client.chat.completions.create({ model: 'poet', messages, max_tokens: 12, temperature: 0, ...IGNORE_EOS });
    expect(whole.object).toBe('chat.completion');
    expect(whole.choices[0]?.message.role).toBe('assistant');
    expect(whole.usage?.completion_tokens).toBe(12);

    const stream = await client.chat.completions.create({
      model: 'poet', messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true }, ...IGNORE_EOS,
    });
    let content = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let role: string | undefined;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      content += chunk.choices[0]?.delta.content ?? '';
      usage = chunk.usage ?? usage;
    }
    expect(role).toBe('assistant');
    expect(content).toBe(whole.choices[0]?.message.content);
    // the same prompt again: its cached_tokens (prefix cache) may differ from the first request's
    const counts = (u: OpenAI.CompletionUsage | null | undefined) => ({ ...u, prompt_tokens_details: undefined });
    expect(counts(usage)).toEqual(counts(whole.usage));
    expect(usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThanOrEqual(whole.usage?.prompt_tokens_details?.cached_tokens ?? 0);
  });

  it('cuts the output at a stop string, excluding it', async () => {
    const params = { model: 'sql', prompt: 'Hello', max_tokens: 24, temperature: 0, ...IGNORE_EOS };
    const full = (await client.completions.create(params)).choices[0]?.text ?? '';
    const chars = Array.from(full); // code points: never split a surrogate pair
    expect(chars.length).toBeGreaterThan(8);
    const stop = chars.slice(6, 8).join('');
    const expected = full.slice(0, full.indexOf(stop));
    const cut = await client.completions.create({ ...params, stop: [stop, 'never-appears'] });
    expect(cut.choices[0]?.text).toBe(expected);
    expect(cut.choices[0]?.finish_reason).toBe('stop');
  });

  it('answers an unknown model with 404 model_not_found', async () => {
    const err = await client.completions.create({ model: 'no-such-task', prompt: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('model_not_found');
  });

  it('answers a too-long prompt with 400 stating the limit', async () => {
    const card = (await client.models.retrieve('sql')) as unknown as { max_model_len: number };
    const err = await client.completions.create({ model: 'sql', prompt: 'tokens '.repeat(2000) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).type).toBe('invalid_request_error');
    expect((err as Error).message).toContain(String(card.max_model_len));
  });

  it('aborts the request on the worker when the client disconnects mid-stream', async () => {
    const stream = await client.completions.create({ model: 'poet', prompt: 'Once', max_tokens: 200, stream: true, ...IGNORE_EOS });
    let id = '';
    let chunks = 0;
    for await (const chunk of stream) {
      id = chunk.id;
      if (++chunks === 3) break; // leaving the loop aborts the HTTP request
    }
    const wc = workerClient(worker.addr);
    const state = await waitFor(async () => {
      const s = (await getInfo(wc)).state;
      return s !== undefined && s.running === 0 && s.waiting === 0 && s.freeKvBlocks === s.totalKvBlocks ? s : undefined;
    }, 5000, 'the worker to free the aborted request');
    expect(state.totalKvBlocks).toBeGreaterThan(0);
    wc.close();
    const row = await waitFor(() => h.db.getRepository(RequestRecord).findOneBy({ id, status: 'aborted' }).then((r) => r ?? undefined), 3000, 'aborted record');
    expect(row.tokensOut).toBeLessThan(200);
  });

  it('serves gRPC Generate and ListModels', async () => {
    const grpc = inferenceClient(h.gateway.grpcAddr);
    const models = await listModels(grpc);
    expect(models.models.map((m) => m.id)).toEqual(expect.arrayContaining(['sql', 'poet']));
    const sampling = { maxTokens: 48, temperature: 0, stop: [], stopTokenIds: [], ignoreEos: true };
    const out = await generate(grpc, { model: 'sql', prompt: 'The capital of', sampling, requestId: 'grpc-e2e-1' });
    const last = out[out.length - 1];
    expect(last?.finishReason).toBe(common.FinishReason.FINISH_REASON_LENGTH);
    expect(last?.completionTokens).toBe(48);
    expect(out.every((m) => m.requestId === 'grpc-e2e-1')).toBe(true);
    const http = await client.completions.create({ model: 'sql', prompt: 'The capital of', max_tokens: 48, temperature: 0, ...IGNORE_EOS });
    expect(out.map((m) => m.text).join('')).toBe(http.choices[0]?.text);
    await expect(generate(grpc, { model: 'nope', prompt: 'x' })).rejects.toMatchObject({ code: status.NOT_FOUND });
    grpc.close();
  });

  it('records every request in Postgres and the adapters as tasks', async () => {
    const repo = h.db.getRepository(RequestRecord);
    const rows = await waitFor(async () => {
      const all = await repo.find();
      return all.length >= 13 ? all : undefined;
    }, 5000, 'request records');
    const completed = rows.filter((r) => r.status === 'completed');
    expect(completed.length).toBeGreaterThanOrEqual(9);
    for (const r of completed) {
      expect(r.tokensIn).toBeGreaterThan(0);
      expect(r.tokensOut).toBeGreaterThan(0);
      expect(r.firstToken).not.toBeNull();
      expect(r.firstToken!.getTime()).toBeGreaterThanOrEqual(r.arrival.getTime());
      expect(r.finish!.getTime()).toBeGreaterThanOrEqual(r.firstToken!.getTime());
    }
    expect(rows.filter((r) => r.status === 'rejected').map((r) => r.task)).toEqual(expect.arrayContaining(['no-such-task', 'nope', 'sql']));
    const tasks = await h.db.getRepository(Task).find({ order: { name: 'ASC' } });
    expect(tasks.map((t) => [t.name, t.rank, t.status])).toEqual([['poet', 4, 'serving'], ['sql', 8, 'serving']]);
  });

  it('fails in-flight streams and answers 503 fast once the worker is gone', async () => {
    const stream = await client.completions.create({ model: 'sql', prompt: 'Once', max_tokens: 200, stream: true, ...IGNORE_EOS });
    let chunks = 0;
    const read = (async () => {
      for await (const _ of stream) if (++chunks === 2) await worker.kill();
    })();
    await expect(read).rejects.toBeInstanceOf(OpenAI.APIError);
    await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).status === 503 ? true : undefined), 5000, 'not ready');
    const t0 = performance.now();
    const err = await client.completions.create({ model: 'sql', prompt: 'x' }).catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('reconnects when the worker comes back', async () => {
    worker = await startWorker(fixture, port);
    await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).ok ? true : undefined), 5000, 'ready again');
    const again = await client.completions.create({ model: 'poet', prompt: 'Hi', max_tokens: 4, ...IGNORE_EOS });
    expect(again.usage?.completion_tokens).toBe(4);
  });
});
