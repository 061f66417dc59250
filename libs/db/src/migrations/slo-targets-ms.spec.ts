import { testDatabase, undoThrough } from '../testing/test-database';

describe('migration 1764800000000: SLO targets in fractional milliseconds (real Postgres)', () => {
  const db = testDatabase('inlaid_slotargets');

  const targets = async (): Promise<Record<string, [number | null, number | null]>> => {
    const rows: Array<{ name: string; ttft: number | null; tpot: number | null }> = await db().query(`SELECT name, slo_ttft_ms AS ttft, slo_tpot_ms AS tpot FROM tasks`);
    return Object.fromEntries(rows.map((r) => [r.name, [r.ttft, r.tpot]]));
  };
  const job = (id: string, task: string, kind: string, slo: object | null, secondsAgo: number, status = 'active') =>
    db().query(`INSERT INTO task_jobs (id, task, kind, status, slo, created_at) VALUES ($1, $2, $3, $4, $5, now() - $6 * interval '1 second')`,
      [id, task, kind, status, slo === null ? null : JSON.stringify(slo), secondsAgo]);

  it("gives tasks written before it their live job's `slo`, keeps fractions, and rounds up on the way down", async () => {
    await undoThrough(db(), 'SloTargetsMs1764800000000');
    await db().query(`INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms) VALUES ('onboarded', 8, NULL, NULL), ('partial', 8, NULL, NULL),
      ('reloaded', 8, NULL, NULL), ('own', 8, 300, NULL), ('none', 8, NULL, NULL), ('gone', 8, NULL, NULL), ('failed', 8, NULL, NULL),
      ('huge', 8, NULL, NULL), ('old', 8, 2000000000, NULL)`);
    await job('a', 'onboarded', 'onboard', { ttft_ms: 500, tpot_ms: 50 }, 10);
    await job('b', 'partial', 'onboard', { tpot_ms: 12.5 }, 10);
    await job('c0', 'reloaded', 'onboard', { ttft_ms: 700 }, 20, 'deleted'); // the vLLM-style load that followed set none
    await job('c1', 'reloaded', 'load', null, 10, 'serving');
    await job('c2', 'reloaded', 'delete', { ttft_ms: 1 }, 5, 'queued'); // removals are no task's targets
    await job('d', 'own', 'onboard', { ttft_ms: 900 }, 10); // the row's own target stays
    await job('g', 'gone', 'onboard', { ttft_ms: 50 }, 10, 'deleted'); // deleted: now served from a worker's own adapters
    await job('f', 'failed', 'onboard', { ttft_ms: 60 }, 10, 'failed');
    await job('h', 'huge', 'onboard', { ttft_ms: 50, tpot_ms: 1e12 }, 10); // out of the API's range now: not backfilled
    await db().runMigrations({ transaction: 'each' });
    expect(await targets()).toEqual({ onboarded: [500, 50], partial: [null, 12.5], reloaded: [null, null], own: [300, null], none: [null, null],
      gone: [null, null], failed: [null, null], huge: [null, null], old: [1e9, null] }); // 'old': clamped to the range the CHECK holds
    await db().query(`UPDATE tasks SET status = 'serving' WHERE name = 'old'`); // a later update of it passes the CHECK
    await db().query(`DELETE FROM tasks WHERE name = 'old'`);

    await db().query(`UPDATE slo_defaults SET ttft_ms = 1500.25, tpot_ms = 80.5`);
    await db().query(`UPDATE tasks SET slo_ttft_ms = 0.5 WHERE name = 'none'`);
    await db().query(`UPDATE tasks SET slo_ttft_ms = 1e9, slo_tpot_ms = 0.001 WHERE name = 'gone'`);
    await undoThrough(db(), 'SloTargetsMs1764800000000'); // (and every later migration)
    expect(await db().query(`SELECT ttft_ms, tpot_ms FROM slo_defaults`)).toEqual([{ ttft_ms: 1501, tpot_ms: 81 }]);
    expect((await targets())['none']).toEqual([1, null]);
    expect((await targets())['gone']).toEqual([1000000000, 1]);
    await db().runMigrations({ transaction: 'each' });
  });

  it('refuses a target written in SQL that the scheduler could not plan with, in tasks and slo_defaults', async () => {
    // (0 and below: the integer columns' CHECK > 0, migration 1738000000000, refuses them still)
    for (const bad of ['0.0009', '1e9 + 1', "'NaN'", "'Infinity'", '1e-322']) {
      for (const col of ['slo_ttft_ms', 'slo_tpot_ms']) {
        await expect(db().query(`UPDATE tasks SET ${col} = ${bad} WHERE name = 'none'`)).rejects.toThrow(`check constraint "tasks_${col}_range"`);
      }
      for (const col of ['ttft_ms', 'tpot_ms']) {
        await expect(db().query(`UPDATE slo_defaults SET ${col} = ${bad}`)).rejects.toThrow(`check constraint "slo_defaults_${col}_range"`);
      }
    }
    await db().query(`UPDATE tasks SET slo_ttft_ms = 0.001, slo_tpot_ms = NULL WHERE name = 'none'`);
    await db().query(`UPDATE slo_defaults SET ttft_ms = 1e9, tpot_ms = 0.001`);
    await db().query(`UPDATE slo_defaults SET ttft_ms = 1000, tpot_ms = 100`);
  });

});
