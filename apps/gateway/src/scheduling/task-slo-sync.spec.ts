/**
 * TaskSloSync against real Postgres: after its first read the dashboard (slo_defaults and the rollup trigger, as
 * metrics/slo-targets.ts reads them) and the scheduler judge every task against the same targets, the tasks' own
 * included (as onboarding writes them); it reads again when a worker lists a new task, and overlapping asks share reads.
 */
import { randomBytes } from 'node:crypto';
import { parseSchedulingConfig } from '@inlaid/config';
import { dropDatabase, openDatabase, RequestRecord } from '@inlaid/db';
import { meetsSlo, Scheduler, Slo } from '@inlaid/scheduling';
import { DataSource } from 'typeorm';
import { targetsFor } from '../metrics/slo';
import { readTargets } from '../metrics/slo-targets';
import { TaskStore } from '../tasks/task-store.service';
import { eventually, sleep } from '../testing/eventually';
import { schedulerOptions } from './scheduler-options';
import { TaskSloSync } from './task-slo-sync';
import { sloOfMs } from './task-slos';

const url = `postgres://postgres@127.0.0.1:5432/inlaid_taskslos_${randomBytes(4).toString('hex')}`;
const ENV = { INLAID_SLO_TTFT_MS: '4000', INLAID_SLO_TPOT_MS: '150.5' };
let db: DataSource;
let store: TaskStore;

/** The real Scheduler, counting the per-task tables it is given and keeping the last. */
class Planned {
  readonly scheduler = new Scheduler(schedulerOptions(parseSchedulingConfig(ENV)));
  reads = 0;
  table: Readonly<Record<string, Slo>> = {};

  setTaskSlos(t: Readonly<Record<string, Slo>>): void {
    this.reads += 1;
    this.table = t;
    this.scheduler.setTaskSlos(t);
  }

  sloOf(task: string): Slo {
    return this.table[task] ?? this.scheduler.config.defaultSlo;
  }
}

function syncFor(p: Planned): TaskSloSync {
  return new TaskSloSync(db, p, { ttftMs: 4000, tpotMs: 150.5 }, (m) => {
    throw new Error(`unexpected warning: ${m}`);
  });
}

beforeAll(async () => {
  db = await openDatabase(url);
  store = new TaskStore(db);
  await store.upsertTask('tight', null, 8, [], 'serving', { ttft_ms: 100, tpot_ms: 20 });
  await store.upsertTask('frac', null, 8, [], 'serving', { ttft_ms: 250.5 });
  await store.upsertTask('plain', null, 8, [], 'serving', null);
});

afterAll(async () => {
  await db?.destroy();
  await dropDatabase(url);
});

function rec(id: string, task: string, ttftMs: number, tpotMs: number): RequestRecord {
  const arrival = new Date(Date.now() - 60_000);
  const firstToken = new Date(arrival.getTime() + ttftMs);
  const finish = new Date(firstToken.getTime() + 10 * tpotMs);
  return { id, task, api: 'completions', arrival, firstToken, finish, tokensIn: 10, tokensOut: 11, status: 'completed', finishReason: 'length', error: null, worker: 'w' };
}

describe('TaskSloSync (real Postgres)', () => {
  it('makes the dashboard judge every task against the targets the scheduler plans it with', async () => {
    const before = await readTargets(db);
    expect(before.defaults).toMatchObject({ ttftMs: 1000, tpotMs: 100 }); // as migration 1738000000000 seeds them
    const p = new Planned();
    const sync = syncFor(p);
    await sync.start();
    sync.stop();
    expect(p.reads).toBe(1);

    const dash = await readTargets(db);
    expect(dash.defaults).toMatchObject({ ttftMs: 4000, tpotMs: 150.5 });
    for (const task of ['tight', 'frac', 'plain', 'unknown']) expect(p.sloOf(task)).toEqual(sloOfMs(targetsFor(dash, task)));
    expect(p.sloOf('tight')).toEqual({ ttftS: 0.1, tpotS: 0.02 });
    expect(p.sloOf('frac')).toEqual({ ttftS: 0.2505, tpotS: 0.1505 });

    // The rollup trigger's verdicts (SLO met or missed, as each record is written) are the scheduler's, fractions of a
    // millisecond included (frac's 250.5 ms TTFT, the 150.5 ms default TPOT; records keep whole milliseconds).
    const records = [rec('p1', 'plain', 3000, 150), rec('p2', 'plain', 3000, 151), rec('f1', 'frac', 250, 100), rec('f2', 'frac', 251, 100),
      rec('t1', 'tight', 90, 20), rec('t2', 'tight', 90, 25), rec('u1', 'unknown', 3999, 10)];
    await db.getRepository(RequestRecord).insert(records);
    const rows: Array<{ task: string; met: number }> = await db.query(
      `SELECT task, sum(slo_met)::int AS met FROM request_rollups WHERE resolution_s = 3600 AND task <> '' GROUP BY task ORDER BY task`,
    );
    const scheduler = new Map<string, number>();
    for (const r of records) {
      const ttftS = ((r.firstToken as Date).getTime() - r.arrival.getTime()) / 1000;
      const tpotS = ((r.finish as Date).getTime() - (r.firstToken as Date).getTime()) / 1000 / (r.tokensOut - 1);
      scheduler.set(r.task, (scheduler.get(r.task) ?? 0) + (meetsSlo(p.sloOf(r.task), ttftS, tpotS) ? 1 : 0));
    }
    expect(Object.fromEntries(rows.map((r) => [r.task, r.met]))).toEqual(Object.fromEntries(scheduler));
    expect(Object.fromEntries(scheduler)).toEqual({ plain: 1, frac: 1, tight: 1, unknown: 1 });
  });

  it("takes a task's targets as onboarding writes them, and drops them when the name is loaded again without", async () => {
    const p = new Planned();
    const sync = syncFor(p);
    await store.upsertTask('fresh', null, 8, [], 'registered', { tpot_ms: 30 });
    await sync.refresh();
    expect(p.sloOf('fresh')).toEqual({ ttftS: 4, tpotS: 0.03 });
    await store.upsertTask('fresh', null, 8, [], 'serving', null); // POST /v1/load_lora_adapter of the name: no SLO
    await sync.refresh();
    expect(p.table).not.toHaveProperty('fresh');
    expect(p.sloOf('fresh')).toEqual({ ttftS: 4, tpotS: 0.1505 });
  });

  it('reads again when a worker lists a task it did not list before, not on its other reports', async () => {
    const p = new Planned();
    const sync = syncFor(p);
    await db.query(`UPDATE tasks SET slo_ttft_ms = 50 WHERE name = 'plain'`);
    sync.noticeServed('w1', ['plain', 'tight']); // its first report
    await eventually(() => p.reads === 1, 'a read on the first report');
    expect(p.sloOf('plain').ttftS).toBe(0.05);
    sync.noticeServed('w1', ['tight', 'plain', 'plain']);
    sync.noticeServed('w1', ['tight']); // one task less: nothing to plan with
    await sleep(50);
    expect(p.reads).toBe(1);
    await db.query(`UPDATE tasks SET slo_ttft_ms = 60 WHERE name = 'plain'`);
    sync.noticeServed('w1', ['tight', 'plain']); // back again (deleted and onboarded again)
    await eventually(() => p.reads === 2 && p.sloOf('plain').ttftS === 0.06, 'a read when a task comes back');
    sync.forget('w1');
    sync.noticeServed('w1', ['tight', 'plain']); // the worker reconnected
    await eventually(() => p.reads === 3, 'a read after the worker came back');
  });

  it('runs one read at a time: asks during a read share one more read', async () => {
    const p = new Planned();
    const sync = syncFor(p);
    const asks = Array.from({ length: 5 }, () => sync.refresh());
    await Promise.all(asks);
    expect(p.reads).toBe(2);
    await sync.refresh();
    expect(p.reads).toBe(3);
  });
});
