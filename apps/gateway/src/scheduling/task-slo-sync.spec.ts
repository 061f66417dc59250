/**
 * TaskSloSync against real Postgres: after its first read the dashboard (slo_defaults and the rollup trigger, as
 * metrics/slo-targets.ts reads them) and the scheduler judge every task against the same targets, the tasks' own
 * included (as onboarding writes them); it reads again when a worker lists a new task, and overlapping asks share reads.
 */
import { parseSchedulingConfig } from '@inlaid/config';
import { RequestRecord } from '@inlaid/db';
import { testDatabase } from '@inlaid/db/testing';
import { meetsSlo, Scheduler, Slo } from '@inlaid/scheduling';
import { DataSource } from 'typeorm';
import { targetsFor } from '../metrics/slo';
import { readTargets } from '../metrics/slo-targets';
import { TaskStore } from '../tasks/task-store.service';
import { schedulerOptions } from './scheduler-options';
import { TaskSloSync } from './task-slo-sync';
import { sloOfMs } from './task-slos';

const db = testDatabase('inlaid_taskslos');
const ENV = { INLAID_SLO_TTFT_MS: '4000', INLAID_SLO_TPOT_MS: '150.5' };
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

/** A TaskSloSync on `ds` (default: the test database) for `p`; its warnings go to `warnings`, else fail the test. */
function syncFor(p: Planned, warnings?: string[], ds: DataSource = db()): TaskSloSync {
  return new TaskSloSync(ds, p, { ttftMs: 4000, tpotMs: 150.5 }, (m) => {
    if (warnings === undefined) throw new Error(`unexpected warning: ${m}`);
    warnings.push(m);
  });
}

beforeAll(async () => {
  store = new TaskStore(db());
  await store.upsertTask('tight', null, 8, [], 'serving', { ttft_ms: 100, tpot_ms: 20 });
  await store.upsertTask('frac', null, 8, [], 'serving', { ttft_ms: 250.5 });
  await store.upsertTask('plain', null, 8, [], 'serving', null);
});

function rec(id: string, task: string, ttftMs: number, tpotMs: number): RequestRecord {
  const arrival = new Date(Date.now() - 60_000);
  const firstToken = new Date(arrival.getTime() + ttftMs);
  const finish = new Date(firstToken.getTime() + 10 * tpotMs);
  return { id, task, api: 'completions', arrival, firstToken, finish, tokensIn: 10, tokensOut: 11, status: 'completed', finishReason: 'length', error: null, worker: 'w' };
}

describe('TaskSloSync (real Postgres)', () => {
  it('makes the dashboard judge every task against the targets the scheduler plans it with', async () => {
    const before = await readTargets(db());
    expect(before.defaults).toMatchObject({ ttftMs: 1000, tpotMs: 100 }); // as migration 1738000000000 seeds them
    const p = new Planned();
    const sync = syncFor(p);
    await sync.start();
    sync.stop();
    expect(p.reads).toBe(1);

    const dash = await readTargets(db());
    expect(dash.defaults).toMatchObject({ ttftMs: 4000, tpotMs: 150.5 });
    for (const task of ['tight', 'frac', 'plain', 'unknown']) expect(p.sloOf(task)).toEqual(sloOfMs(targetsFor(dash, task)));
    expect(p.sloOf('tight')).toEqual({ ttftS: 0.1, tpotS: 0.02 });
    expect(p.sloOf('frac')).toEqual({ ttftS: 0.2505, tpotS: 0.1505 });

    // The rollup trigger's verdicts (SLO met or missed, as each record is written) are the scheduler's, fractions of a
    // millisecond included (frac's 250.5 ms TTFT, the 150.5 ms default TPOT; records keep whole milliseconds).
    const records = [rec('p1', 'plain', 3000, 150), rec('p2', 'plain', 3000, 151), rec('f1', 'frac', 250, 100), rec('f2', 'frac', 251, 100),
      rec('t1', 'tight', 90, 20), rec('t2', 'tight', 90, 25), rec('u1', 'unknown', 3999, 10)];
    await db().getRepository(RequestRecord).insert(records);
    const rows: Array<{ task: string; met: number }> = await db().query(
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
    const asked = jest.spyOn(sync, 'refresh');
    const read = async (n: number): Promise<void> => {
      expect(asked).toHaveBeenCalledTimes(n);
      await asked.mock.results[n - 1]?.value;
      expect(p.reads).toBe(n);
    };
    await db().query(`UPDATE tasks SET slo_ttft_ms = 50 WHERE name = 'plain'`);
    sync.noticeServed('w1', ['plain', 'tight']); // its first report
    await read(1);
    expect(p.sloOf('plain').ttftS).toBe(0.05);
    sync.noticeServed('w1', ['tight', 'plain', 'plain']);
    sync.noticeServed('w1', ['tight']); // one task less: nothing to plan with
    expect(asked).toHaveBeenCalledTimes(1);
    await db().query(`UPDATE tasks SET slo_ttft_ms = 60 WHERE name = 'plain'`);
    sync.noticeServed('w1', ['tight', 'plain']); // back again (deleted and onboarded again)
    await read(2);
    expect(p.sloOf('plain').ttftS).toBe(0.06);
    sync.forget('w1');
    sync.noticeServed('w1', ['tight', 'plain']); // the worker reconnected
    await read(3);
  });

  it("leaves out, with one warning per row and targets, a row the scheduler cannot plan with; the other tasks keep their own", async () => {
    // the columns' CHECKs (migration 1764800000000) refuse such a row: dropped here (this spec's own database) to read one
    await db().query(`ALTER TABLE tasks DROP CONSTRAINT tasks_slo_ttft_ms_range, DROP CONSTRAINT tasks_slo_tpot_ms_range`);
    await db().query(`INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms) VALUES ('tiny', 8, 1e-322, NULL), ('nan', 8, NULL, 'NaN'), ('inf', 8, 'Infinity', NULL)`);
    try {
      const p = new Planned();
      const warnings: string[] = [];
      const sync = syncFor(p, warnings);
      await sync.refresh();
      await sync.refresh(); // read again (every REFRESH_MS): the same rows are not warned of again
      expect(p.sloOf('tight')).toEqual({ ttftS: 0.1, tpotS: 0.02 });
      for (const task of ['tiny', 'nan', 'inf']) expect(p.table).not.toHaveProperty(task);
      expect(p.sloOf('tiny')).toEqual({ ttftS: 4, tpotS: 0.1505 });
      expect(warnings.map((w) => /task "(\w+)"/.exec(w)?.[1]).sort()).toEqual(['inf', 'nan', 'tiny']); // before: each again at each read
      await db().query(`UPDATE tasks SET slo_ttft_ms = 'NaN' WHERE name = 'tiny'`);
      await sync.refresh();
      expect(warnings).toHaveLength(4);
      expect(warnings[3]).toContain('task "tiny" is planned with the default SLO: its targets (NaN / 150.5 ms)');
    } finally {
      await db().query(`DELETE FROM tasks WHERE name IN ('tiny', 'nan', 'inf')`);
    }
  });

  it("reads the tasks' targets while slo_defaults cannot be written, and writes it at the next read", async () => {
    let refuse = true;
    const real = db();
    const flaky = new Proxy(real, {
      get: (ds, key) => (key !== 'query' ? Reflect.get(ds, key, ds)
        : (sql: string, params?: unknown[]) => (refuse && sql.includes('INSERT INTO slo_defaults') ? Promise.reject(new Error('lock timeout')) : real.query(sql, params))),
    });
    await db().query(`UPDATE slo_defaults SET ttft_ms = 1000, tpot_ms = 100`);
    const p = new Planned();
    const warnings: string[] = [];
    const sync = syncFor(p, warnings, flaky);
    await sync.refresh();
    expect(p.sloOf('tight')).toEqual({ ttftS: 0.1, tpotS: 0.02 });
    expect(warnings).toEqual([expect.stringContaining('slo_defaults not checked')]);
    refuse = false;
    await sync.refresh();
    expect(await db().query(`SELECT ttft_ms, tpot_ms FROM slo_defaults`)).toEqual([{ ttft_ms: 4000, tpot_ms: 150.5 }]);
    expect(warnings).toHaveLength(1);
  });

  it('warns once of each value slo_defaults drifts to after this gateway wrote it (another gateway configured otherwise), and leaves it', async () => {
    const p = new Planned();
    const warnings: string[] = [];
    const sync = syncFor(p, warnings);
    await sync.refresh();
    await sync.refresh();
    expect(warnings).toEqual([]);
    await db().query(`UPDATE slo_defaults SET ttft_ms = 999`);
    await sync.refresh();
    await sync.refresh();
    expect(warnings).toEqual([expect.stringContaining('slo_defaults changed to 999 / 150.5 ms')]); // before: each read, writing it back
    expect(await db().query(`SELECT ttft_ms, tpot_ms FROM slo_defaults`)).toEqual([{ ttft_ms: 999, tpot_ms: 150.5 }]);
    await db().query(`UPDATE slo_defaults SET ttft_ms = 998`);
    await sync.refresh();
    expect(warnings).toHaveLength(2);
    expect(warnings[1]).toContain('slo_defaults changed to 998 / 150.5 ms');
    expect(p.sloOf('frac')).toEqual({ ttftS: 0.2505, tpotS: 0.1505 }); // the scheduler keeps this gateway's own defaults
    await db().query(`UPDATE slo_defaults SET ttft_ms = 4000, tpot_ms = 150.5`);
  });

  it('two gateways configured differently: the row settles on the second one to write, and each warns at most once', async () => {
    const pa = new Planned();
    const warnA: string[] = [];
    const warnB: string[] = [];
    const a = syncFor(pa, warnA);
    const b = new TaskSloSync(db(), new Planned(), { ttftMs: 1000, tpotMs: 50 }, (m) => warnB.push(m));
    const seen: number[] = [];
    for (let i = 0; i < 4; i++) {
      await a.refresh();
      seen.push((await db().query(`SELECT ttft_ms FROM slo_defaults`))[0].ttft_ms);
      await b.refresh();
      seen.push((await db().query(`SELECT ttft_ms FROM slo_defaults`))[0].ttft_ms);
    }
    expect(seen).toEqual([4000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]); // before: 4000, 1000, 4000, 1000, … (and 7 warnings)
    expect(warnA).toEqual([expect.stringContaining('slo_defaults changed to 1000 / 50 ms')]);
    expect(warnB).toEqual([]);
    await db().query(`UPDATE slo_defaults SET ttft_ms = 4000, tpot_ms = 150.5`);
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
