/**
 * Retention against real Postgres (trigger as in production): records 10 days and 1 day old; a sweep with 7
 * days' retention deletes exactly the old minute rows (both rollup tables), keeps hour and day rows and recent
 * minute rows, and an old range is then answered at hour precision with the records' sums. Then hour rollups
 * and records kept 5 days: the old hour rows and records go, day rows and recent data stay, and the old range
 * is answered from day rollups with the same sums.
 */
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '@inlaid/config';
import { dropDatabase, openDatabase, RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { DashboardQueries } from './dashboard.queries';
import { minuteFloor, retentionFloors, retentionStatements } from './rollup-retention';
import { RollupRetentionService } from './rollup-retention.service';
import { chartStep, planQuery } from './time-range';

const url = `postgres://postgres@127.0.0.1:5432/inlaid_retention_${randomBytes(4).toString('hex')}`;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const now = new Date(Math.floor(Date.now() / HOUR) * HOUR + 17 * MINUTE);
const oldStart = new Date(Math.floor((now.getTime() - 10 * DAY) / HOUR) * HOUR);
const newStart = new Date(Math.floor((now.getTime() - DAY) / HOUR) * HOUR);
let db: DataSource;

function records(prefix: string, start: Date, n: number): RequestRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const arrival = new Date(start.getTime() + i * 35_000); // spread over 1 h 57 min
    return { id: `${prefix}${i}`, task: i % 3 === 0 ? 'a' : 'b', api: 'completions', arrival,
      firstToken: new Date(arrival.getTime() + 50 + i), finish: new Date(arrival.getTime() + 900 + 3 * i), tokensIn: 10,
      tokensOut: 1 + (i % 20), status: 'completed', finishReason: 'stop', error: null, worker: 'w' };
  });
}

function service(days: number, hourRollupDays = 0, recordDays = 0): RollupRetentionService {
  const config = { dashboard: { minuteRollupDays: days, hourRollupDays, recordDays, sweepS: 3600 } } as unknown as GatewayConfig;
  return new RollupRetentionService(db, config);
}

async function minuteRows(table: string, before: boolean, floor: Date): Promise<number> {
  const rows: Array<{ n: number }> = await db.query(
    `SELECT count(*)::int AS n FROM ${table} WHERE resolution_s = 60 AND bucket_start ${before ? '<' : '>='} $1`, [floor]);
  return rows[0]?.n ?? -1;
}

beforeAll(async () => {
  db = await openDatabase(url);
  await db.query(`INSERT INTO tasks (name, rank) VALUES ('a', 8), ('b', 8)`);
  await db.getRepository(RequestRecord).insert([...records('old', oldStart, 200), ...records('new', newStart, 200)]);
});

afterAll(async () => {
  await db?.destroy();
  await dropDatabase(url);
});

describe('minute rollup retention', () => {
  it('places the floor days back, on the hour, and keeps everything for 0 days', () => {
    expect(minuteFloor(new Date('2026-11-29T13:47:00Z'), 7)?.toISOString()).toBe('2026-11-22T13:00:00.000Z');
    expect(minuteFloor(new Date('2026-11-29T13:47:00Z'), 0)).toBeNull();
    expect(() => retentionStatements(new Date(), 0)).toThrow('batch');
  });

  it('plans ranges that start before the floor at hour precision, charts in whole hours', () => {
    const floor = minuteFloor(now, 7);
    const old = { from: oldStart, to: new Date(oldStart.getTime() + HOUR) };
    const recent = { from: newStart, to: new Date(newStart.getTime() + HOUR) };
    expect(planQuery(old).precision).toBe('minute');
    expect(planQuery(old, floor).precision).toBe('hour');
    expect(planQuery(recent, floor).precision).toBe('minute');
    expect(chartStep(old, 120, floor)).toEqual({ stepS: 3600, resolutionS: 3600 });
    expect(chartStep(recent, 120, floor)).toEqual({ stepS: 60, resolutionS: 60 });
  });

  it('deletes exactly the old minute rows and answers old ranges from hour rollups', async () => {
    const floor = minuteFloor(now, 7);
    if (floor === null) throw new Error('floor expected');
    const tables = ['request_rollups', 'request_latency_rollups'];
    const before = await Promise.all(tables.map(async (t) => [await minuteRows(t, true, floor), await minuteRows(t, false, floor)]));
    for (const [old, recent] of before) {
      expect(old).toBeGreaterThan(0);
      expect(recent).toBeGreaterThan(0);
    }
    const hourRows = async (): Promise<unknown> => db.query(`SELECT resolution_s, count(*)::int AS n FROM request_rollups
      WHERE resolution_s > 60 GROUP BY 1 ORDER BY 1`);
    const coarse = await hourRows();

    const result = await service(7).sweep(now);
    expect(result.floor?.toISOString()).toBe(floor.toISOString());
    expect(result.deleted).toEqual({ request_rollups: before[0]?.[0], request_latency_rollups: before[1]?.[0] });
    for (const [i, t] of tables.entries()) {
      expect(await minuteRows(t, true, floor)).toBe(0);
      expect(await minuteRows(t, false, floor)).toBe(before[i]?.[1]);
    }
    expect(await hourRows()).toEqual(coarse);
    expect((await service(7).sweep(now)).deleted).toEqual({ request_rollups: 0, request_latency_rollups: 0 });

    // A ragged 95-minute range in the old data: widened to whole hours, the sums still match the records.
    const range = { from: new Date(oldStart.getTime() + 7 * MINUTE), to: new Date(oldStart.getTime() + 102 * MINUTE) };
    const plan = planQuery(range, floor);
    expect(plan.precision).toBe('hour');
    const sums = await new DashboardQueries(db).taskSums(plan);
    const raw: Array<{ task: string; n: number }> = await db.query(`SELECT task, count(*)::float8 AS n FROM request_records
      WHERE arrival >= $1 AND arrival < $2 GROUP BY task ORDER BY task`, [plan.range.from, plan.range.to]);
    expect(sums.map((s) => [s.task, s.requests]).sort()).toEqual(raw.map((r) => [r.task, r.n]));
    expect(raw.reduce((a, r) => a + r.n, 0)).toBe(200);
  });

  it('deletes old hour rollups and records, keeps day rollups, answers old ranges from day rollups', async () => {
    const floors = retentionFloors(now, { minuteRollupDays: 7, hourRollupDays: 5, recordDays: 5 });
    if (floors.hour === null || floors.records === null) throw new Error('floors expected');
    expect(floors.hour.getTime() % DAY).toBe(0);
    const count = async (sql: string, args: unknown[]): Promise<number> => ((await db.query(sql, args)) as Array<{ n: number }>)[0]?.n ?? -1;
    const hourRows = (op: string): Promise<number> => count(
      `SELECT count(*)::int AS n FROM request_rollups WHERE resolution_s = 3600 AND bucket_start ${op} $1`, [floors.hour]);
    const dayRows = (): Promise<number> => count(`SELECT count(*)::int AS n FROM request_rollups WHERE resolution_s = 86400`, []);
    const recordRows = (op: string): Promise<number> => count(
      `SELECT count(*)::int AS n FROM request_records WHERE arrival ${op} $1`, [floors.records]);
    const [oldHours, newHours, days, oldRecords, newRecords] = [await hourRows('<'), await hourRows('>='), await dayRows(),
      await recordRows('<'), await recordRows('>=')];
    expect(oldHours).toBeGreaterThan(0);
    expect([oldRecords, newRecords]).toEqual([200, 200]);

    const result = await service(7, 5, 5).sweep(now);
    expect(result.deleted['request_rollups/hour']).toBe(oldHours);
    expect(result.deleted['request_latency_rollups/hour']).toBeGreaterThan(0);
    expect(result.deleted['request_records']).toBe(200);
    expect([await hourRows('<'), await hourRows('>='), await dayRows()]).toEqual([0, newHours, days]);
    expect([await recordRows('<'), await recordRows('>=')]).toEqual([0, 200]);

    // The old 95-minute range now starts before the hour floor: whole days, from day rollups, same sums.
    const range = { from: new Date(oldStart.getTime() + 7 * MINUTE), to: new Date(oldStart.getTime() + 102 * MINUTE) };
    const plan = planQuery(range, floors);
    expect(plan.precision).toBe('day');
    expect(plan.segments.every((s) => s.resolutionS === 86400)).toBe(true);
    const sums = await new DashboardQueries(db).taskSums(plan);
    expect(sums.reduce((a, s) => a + s.requests, 0)).toBe(200);
    const hist = await new DashboardQueries(db).latencyHistograms(plan, ['a', 'b']);
    expect(hist.length).toBeGreaterThan(0);
    expect(chartStep(range, 120, floors)).toEqual({ stepS: 86400, resolutionS: 86400 });
    // The recent range stays at minute precision; records kept, minute rollups kept.
    const recent = { from: newStart, to: new Date(newStart.getTime() + HOUR) };
    expect(planQuery(recent, floors).precision).toBe('minute');
  });

  it('answers at hour precision where records are gone but minute rollups are kept', () => {
    const floors = retentionFloors(now, { minuteRollupDays: 7, hourRollupDays: 0, recordDays: 2 });
    const threeDaysAgo = new Date(Math.floor((now.getTime() - 3 * DAY) / HOUR) * HOUR);
    const range = { from: threeDaysAgo, to: new Date(threeDaysAgo.getTime() + HOUR) };
    expect(planQuery(range, floors).precision).toBe('hour');
    expect(planQuery(range, { ...floors, records: null }).precision).toBe('minute');
    expect(retentionStatements(floors, 10).map((st) => st.table)).toEqual(
      ['request_rollups', 'request_latency_rollups', 'request_records']);
  });

  it('does nothing when everything is kept forever', async () => {
    expect(await service(0).sweep(now)).toEqual({ floor: null, floors: { minute: null, hour: null, records: null }, deleted: {} });
  });
});
