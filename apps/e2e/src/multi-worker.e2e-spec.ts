/**
 * Two real workers behind one gateway (task placement, scheduling/placement.ts): four tasks spread over
 * both workers with each task's requests on one worker; one worker killed mid-run, its waiting requests
 * re-routed to the other; once it is back it gets tasks again. Checked through the Postgres request
 * records' `worker` column. Worker A runs one sequence at a time, so requests admitted there wait with
 * no output (those are re-routed transparently; the one streaming output fails cleanly, as documented).
 */
import { RequestRecord } from '@inlaid/db';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { MoreThanOrEqual } from 'typeorm';
import { Harness, startHarness, waitFor, workerSnap } from './support/gateway-harness';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';

jest.setTimeout(120_000);

const TASKS = ['sql', 'poet', 'sql2', 'poet2'];
let fixture: TinyFixture;
let portA: number;
let a: WorkerProcess;
let b: WorkerProcess;
let h: Harness;
let client: OpenAI;

const snapOf = (addr: string) => workerSnap(h, addr);

/** `perTask` concurrent completions for every task; settles each (value or error). */
function burst(perTask: number, maxTokens: number): Promise<PromiseSettledResult<OpenAI.Completion>[]> {
  const calls = TASKS.flatMap((task) => Array.from({ length: perTask }, (_, i) =>
    client.completions.create({ model: task, prompt: `${task} ${i}`, max_tokens: maxTokens, temperature: 0, ignore_eos: true } as never) as Promise<OpenAI.Completion>));
  return Promise.allSettled(calls);
}

/** Request records that arrived since `since`, once `n` of them are written. */
function recordsSince(since: Date, n: number): Promise<RequestRecord[]> {
  return waitFor(async () => {
    const rows = await h.db.getRepository(RequestRecord).findBy({ arrival: MoreThanOrEqual(since) });
    return rows.length >= n ? rows : undefined;
  }, 5000, `${n} request records`);
}

function workersByTask(rows: readonly RequestRecord[]): Map<string, Set<string | null>> {
  const out = new Map<string, Set<string | null>>();
  for (const r of rows) out.set(r.task, (out.get(r.task) ?? new Set()).add(r.worker));
  return out;
}

beforeAll(async () => {
  fixture = await makeTinyFixture();
  for (const [from, to] of [['sql', 'sql2'], ['poet', 'poet2']]) cpSync(join(fixture.adaptersDir, from), join(fixture.adaptersDir, to), { recursive: true });
  portA = await freePort();
  [a, b] = await Promise.all([startWorker(fixture, portA, 120_000, ['--max-num-seqs', '1']), startWorker(fixture, await freePort())]);
  h = await startHarness({ WORKER_ADDRS: `${a.addr},${b.addr}` });
  client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  await waitFor(async () => ((await snapOf(a.addr)).ready && (await snapOf(b.addr)).ready ? true : undefined), 15_000, 'both workers ready');
});

afterAll(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await h?.close();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

it('spreads four tasks over both workers, each task on one worker', async () => {
  const since = new Date();
  // long enough that a task's three requests overlap on a loaded machine: a task with nothing in flight has no home,
  // so a request arriving after its siblings finished may go to the other worker (placement.ts), which is right
  const results = await burst(3, 96);
  expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
  const rows = await recordsSince(since, 12);
  expect(rows.every((r) => r.status === 'completed')).toBe(true);
  const byTask = workersByTask(rows);
  expect([...byTask.keys()].sort()).toEqual([...TASKS].sort());
  for (const [task, ws] of byTask) expect([task, ws.size]).toEqual([task, 1]);
  expect(new Set(rows.map((r) => r.worker))).toEqual(new Set([a.addr, b.addr]));
});

it('re-routes the killed worker\'s waiting requests to the other one', async () => {
  const since = new Date();
  const running = burst(3, 200); // tiny model: 256 positions in all
  // A holds at least one task (3 requests) and runs one sequence: the others wait there without output.
  await waitFor(async () => ((await snapOf(a.addr)).inFlight >= 2 ? true : undefined), 10_000, 'requests waiting on A');
  await a.kill();
  const results = await running;
  const failed = results.filter((r) => r.status === 'rejected');
  expect(failed.length).toBeLessThanOrEqual(1); // at most the one that was streaming output on A
  for (const f of failed) expect(String((f as PromiseRejectedResult).reason)).toMatch(/unavailable|disconnected/i);
  const rows = await recordsSince(since, 12);
  const completed = rows.filter((r) => r.status === 'completed');
  expect(completed).toHaveLength(12 - failed.length);
  expect(completed.every((r) => r.worker === b.addr && r.tokensOut === 200)).toBe(true);
  const after = await client.completions.create({ model: 'sql', prompt: 'after', max_tokens: 4, temperature: 0 });
  expect(after.usage?.completion_tokens).toBe(4);
});

it('uses the worker again once it rejoins', async () => {
  a = await startWorker(fixture, portA, 120_000, ['--max-num-seqs', '1']);
  await waitFor(async () => ((await snapOf(a.addr)).ready ? true : undefined), 10_000, 'A back');
  const since = new Date();
  const results = await burst(2, 16);
  expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
  const rows = await recordsSince(since, 8);
  for (const [task, ws] of workersByTask(rows)) expect([task, ws.size]).toEqual([task, 1]);
  expect(new Set(rows.map((r) => r.worker))).toEqual(new Set([a.addr, b.addr]));
});
