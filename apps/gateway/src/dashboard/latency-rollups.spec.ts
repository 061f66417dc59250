/**
 * Rollups against the raw records they summarise (real Postgres, trigger as in production): 1,800 records of
 * three tasks with spread-out timings, written in gateway-sized batches, some of them late. Percentiles from
 * the bucket counts must be within HIST_RELATIVE_ERROR of the exact nearest-rank percentiles (percentile_disc)
 * of the records, and the sums must equal the records' sums, at minute and at hour precision.
 */
import { randomBytes } from 'node:crypto';
import { dropDatabase, openDatabase, RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { ALL_TASKS, DashboardQueries } from './dashboard.queries';
import { HIST_RELATIVE_ERROR } from './log-buckets';
import { emptyHistograms, histogramsByTask, METRICS, toTaskStats } from './task-stats';
import { planQuery, TimeRange } from './time-range';

const url = `postgres://postgres@127.0.0.1:5432/inlaid_latspec_${randomBytes(4).toString('hex')}`;
const HOUR = 3_600_000;
const MINUTE = 60_000;
const now = new Date(Math.floor(Date.now() / HOUR) * HOUR);
const base = now.getTime() - 30 * HOUR; // records over [base, base + 2 h)
const TASKS = ['big', 'mid', 'tiny'];
let db: DataSource;
let q: DashboardQueries;

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeRecords(n: number): RequestRecord[] {
  const rnd = prng(7);
  return Array.from({ length: n }, (_, i) => {
    const task = TASKS[rnd() < 0.7 ? 0 : rnd() < 0.8 ? 1 : 2] ?? 'big';
    const arrival = new Date(base + Math.floor(rnd() * 2 * HOUR));
    const r = rnd();
    const status: RequestRecord['status'] = r < 0.9 ? 'completed' : r < 0.94 ? 'aborted' : r < 0.97 ? 'failed' : 'rejected';
    const ttft = status === 'rejected' ? null : Math.exp(2 + rnd() * 7) * (0.5 + rnd()); // ~4 ms .. 12 s
    const tokensOut = status === 'rejected' ? 0 : 1 + Math.floor(rnd() * rnd() * 300);
    const tpot = 0.05 + rnd() * rnd() * 80; // 0.05 .. 80 ms
    const firstToken = ttft === null ? null : new Date(arrival.getTime() + ttft);
    const finish = new Date((firstToken ?? arrival).getTime() + (tokensOut - 1) * tpot);
    return { id: `r${i}`, task, api: 'completions', arrival, firstToken, finish, tokensIn: 5 + (i % 50), tokensOut, status,
      finishReason: status === 'completed' ? 'stop' : null, error: null, worker: 'w' };
  });
}

const RECORDS = makeRecords(1800);
const METRIC_SQL = [
  `date_part('epoch', first_token - arrival) * 1000`,
  `CASE WHEN tokens_out > 1 THEN date_part('epoch', finish - first_token) * 1000 / (tokens_out - 1) END`,
  `date_part('epoch', finish - arrival) * 1000`,
];

beforeAll(async () => {
  db = await openDatabase(url);
  q = new DashboardQueries(db);
  await db.query(`INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms) VALUES ('big', 8, 300, 20), ('mid', 8, NULL, NULL), ('tiny', 8, 2000, 50)`);
  // Batches of 200 as RecordsService writes them, out of arrival order (late records merge into existing rows).
  for (let i = 0; i < RECORDS.length; i += 200) await db.getRepository(RequestRecord).insert(RECORDS.slice(i, i + 200));
});

afterAll(async () => {
  await db?.destroy();
  await dropDatabase(url);
});

/** Exact nearest-rank percentiles of completed records per task ('' = all) and metric. */
async function exactPercentiles(range: TimeRange): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const [m, expr] of METRIC_SQL.entries()) {
    const rows: Array<{ task: string; p: number[] }> = await db.query(
      `SELECT coalesce(task, '') AS task, percentile_disc(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY v) AS p
       FROM (SELECT task, ${expr} AS v FROM request_records WHERE status = 'completed' AND arrival >= $1 AND arrival < $2) x
       WHERE v IS NOT NULL GROUP BY GROUPING SETS ((task), ())`,
      [range.from, range.to],
    );
    for (const r of rows) out.set(`${r.task}:${METRICS[m]}`, r.p.map(Number));
  }
  return out;
}

// An hour-aligned range (hour precision) and a ragged 95-minute one (minute precision, through the minute rollups).
const hourRange = { from: new Date(base - 20 * HOUR), to: now };
const minuteRange = { from: new Date(base + 17 * MINUTE), to: new Date(base + 112 * MINUTE) };

describe('rollups against raw records (real Postgres)', () => {
  it.each([['hour', hourRange], ['minute', minuteRange]])('%s precision: percentiles within the bucket error', async (precision, range) => {
    const plan = planQuery(range);
    expect(plan.precision).toBe(precision);
    const exact = await exactPercentiles(range);
    const hists = histogramsByTask(await q.latencyHistograms(plan, TASKS));
    let checked = 0;
    for (const task of [...TASKS, ALL_TASKS]) {
      const h = hists.get(task) ?? emptyHistograms();
      const stats = toTaskStats({ task, requests: 0, completed: 0, aborted: 0, failed: 0, rejected: 0, sloEligible: 0, ttftMet: 0,
        tpotMet: 0, sloMet: 0, tokensIn: 0, tokensOut: 0, ttftSumMs: 0, latencySumMs: 0 }, h, { ttftMs: 1, tpotMs: 1, isDefault: true }, HOUR);
      for (const metric of METRICS) {
        const want = exact.get(`${task}:${metric}`);
        if (want === undefined) throw new Error(`no exact percentiles for ${task}:${metric}`);
        const got = stats[`${metric}Ms`];
        [got.p50, got.p90, got.p99].forEach((v, i) => {
          const w = want[i] ?? NaN;
          expect(v).not.toBeNull();
          // Values under 0.1 ms sit in bucket 0 (reported as 0.05 ms): absolute error at most 0.05 ms there.
          const err = w < 0.1 ? Math.abs((v ?? 0) - w) / 0.1 : Math.abs((v ?? 0) / w - 1);
          expect(err).toBeLessThanOrEqual(HIST_RELATIVE_ERROR + 1e-9);
          checked++;
        });
      }
    }
    expect(checked).toBe(36);
  });

  it.each([['hour', hourRange], ['minute', minuteRange]])('%s precision: rollup sums equal the raw sums', async (_p, range) => {
    const plan = planQuery(range);
    const rolled = new Map((await q.taskSums(plan)).map((s) => [s.task, s]));
    const raw: Array<Record<string, number | string>> = await db.query(
      `SELECT task, count(*)::float8 AS requests, count(*) FILTER (WHERE status = 'completed')::float8 AS completed,
         count(*) FILTER (WHERE status = 'failed')::float8 AS failed, count(*) FILTER (WHERE status = 'rejected')::float8 AS rejected,
         count(*) FILTER (WHERE status = 'aborted')::float8 AS aborted, sum(tokens_in)::float8 AS "tokensIn", sum(tokens_out)::float8 AS "tokensOut",
         coalesce(sum(date_part('epoch', first_token - arrival) * 1000) FILTER (WHERE status = 'completed'), 0)::float8 AS "ttftSumMs"
       FROM request_records WHERE arrival >= $1 AND arrival < $2 GROUP BY task`,
      [plan.range.from, plan.range.to],
    );
    expect(raw.length).toBe(3);
    for (const r of raw) {
      const s = rolled.get(String(r['task']));
      expect(s).toMatchObject({ requests: r['requests'], completed: r['completed'], failed: r['failed'], rejected: r['rejected'],
        aborted: r['aborted'], tokensIn: r['tokensIn'], tokensOut: r['tokensOut'] });
      expect(s?.ttftSumMs).toBeCloseTo(Number(r['ttftSumMs']), 3);
    }
    expect(rolled.size).toBe(3);
  });
});
