/**
 * The dashboard's aggregate SQL against real Postgres: records written through the rollup trigger must give
 * the same numbers at minute and at hour precision (minute, hour and day rollups), matching the hand-computed
 * ones. latency-rollups.spec.ts checks percentiles and sums against the raw records on more data.
 */
import { randomBytes } from 'node:crypto';
import { dropDatabase, openDatabase, RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { judge } from '../metrics/slo';
import { readTargets } from '../metrics/slo-targets';
import { ALL_TASKS, DashboardQueries } from './dashboard.queries';
import { HIST_BOUNDS_MS, HIST_RELATIVE_ERROR } from './log-buckets';
import { readJobs } from './task-jobs';
import { emptyHistograms, toTaskStats, worstFirst } from './task-stats';
import { planQuery } from './time-range';

const url = `postgres://postgres@127.0.0.1:5432/inlaid_dashspec_${randomBytes(4).toString('hex')}`;
const HOUR = 3_600_000;
// Records live in [base, base + 30 min), five hours before "now", on an hour boundary.
const now = new Date(Math.floor(Date.now() / HOUR) * HOUR);
const base = new Date(now.getTime() - 5 * HOUR);
let db: DataSource;
let q: DashboardQueries;

function rec(id: string, task: string, offsetS: number, ttftMs: number | null, tokensOut: number, tpotMs: number, status: RequestRecord['status']): RequestRecord {
  const arrival = new Date(base.getTime() + offsetS * 1000);
  const firstToken = ttftMs === null ? null : new Date(arrival.getTime() + ttftMs);
  const finish = new Date((firstToken ?? arrival).getTime() + Math.max(0, tokensOut - 1) * tpotMs);
  return { id, task, api: 'completions', arrival, firstToken, finish, tokensIn: 10, tokensOut, status, finishReason: null, error: status === 'failed' ? 'boom' : null, worker: 'w' };
}

// sql: targets 200 ms / 20 ms. poet: defaults (1000 ms / 100 ms).
const RECORDS = [
  rec('s1', 'sql', 0, 100, 11, 10, 'completed'), // met
  rec('s2', 'sql', 60, 300, 11, 10, 'completed'), // TTFT missed
  rec('s3', 'sql', 120, 150, 11, 50, 'completed'), // TPOT missed
  rec('s4', 'sql', 1500, null, 0, 0, 'failed'), // missed (error)
  rec('s5', 'sql', 1600, 50, 3, 10, 'aborted'), // not judged
  rec('p1', 'poet', 10, 400, 21, 40, 'completed'), // met
  rec('p2', 'poet', 900, 800, 1, 0, 'completed'), // met (one token: no TPOT)
];

beforeAll(async () => {
  db = await openDatabase(url);
  q = new DashboardQueries(db);
  await db.query(`INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms) VALUES ('sql', 8, 200, 20), ('poet', 4, NULL, NULL)`);
  // Two statements, like two RecordsService batches, so the trigger also merges into existing rollup rows.
  await db.getRepository(RequestRecord).insert(RECORDS.slice(0, 4));
  await db.getRepository(RequestRecord).insert(RECORDS.slice(4));
});

afterAll(async () => {
  await db?.destroy();
  await dropDatabase(url);
});

const exact = { from: base, to: new Date(base.getTime() + 2 * HOUR) };
const wide = { from: new Date(now.getTime() - 24 * HOUR), to: now };

describe('dashboard SQL (real Postgres)', () => {
  it('answers short ranges to the minute and long ones to the hour', () => {
    expect(planQuery(exact).precision).toBe('minute');
    expect(planQuery(wide).precision).toBe('hour');
  });

  it.each([['minute', exact], ['hour', wide]])('per-task sums from %s match the hand count', async (_kind, range) => {
    const sums = new Map((await q.taskSums(planQuery(range))).map((s) => [s.task, s]));
    expect([...sums.keys()].sort()).toEqual(['poet', 'sql']);
    expect(sums.get('sql')).toMatchObject({ requests: 5, completed: 3, failed: 1, aborted: 1, sloEligible: 4, sloMet: 1, ttftMet: 2, tpotMet: 2, tokensOut: 36 });
    expect(sums.get('poet')).toMatchObject({ requests: 2, completed: 2, sloEligible: 2, sloMet: 2 });
    expect(sums.get('sql')?.ttftSumMs).toBeCloseTo(550, 6);
  });

  it('agrees with the TypeScript SLO rules record by record', async () => {
    const targets = await readTargets(db);
    const met = RECORDS.filter((r) => judge(r, targets.byTask.get(r.task) ?? targets.defaults).met).map((r) => r.id);
    expect(met.sort()).toEqual(['p1', 'p2', 's1']);
  });

  it('histograms are the same from both paths and give the right percentiles', async () => {
    const key = (h: { task: string; metric: string; bucket: number; count: number }) => `${h.task}:${h.metric}:${h.bucket}:${h.count}`;
    const raw = await q.latencyHistograms(planQuery(exact), ['sql', 'poet']);
    const rolled = await q.latencyHistograms(planQuery(wide), ['sql', 'poet']);
    expect(raw.map(key).sort()).toEqual(rolled.map(key).sort());
    const hist = emptyHistograms();
    for (const h of rolled.filter((r) => r.task === 'sql')) hist[h.metric][h.bucket] = h.count;
    const overall = rolled.filter((r) => r.task === ALL_TASKS && r.metric === 'ttft').reduce((a, r) => a + r.count, 0);
    expect(overall).toBe(5); // completed: s1-s3, p1, p2
    const sums = (await q.taskSums(planQuery(wide), 'sql'))[0];
    if (sums === undefined) throw new Error('no sums for sql');
    const stats = toTaskStats(sums, hist, { ttftMs: 200, tpotMs: 20, isDefault: false }, 24 * HOUR);
    // TTFTs 100, 150, 300 ms: nearest-rank p50 = 150, p99 = 300, within the bucket error.
    expect(Math.abs((stats.ttftMs.p50 ?? 0) / 150 - 1)).toBeLessThanOrEqual(HIST_RELATIVE_ERROR);
    expect(Math.abs((stats.ttftMs.p99 ?? 0) / 300 - 1)).toBeLessThanOrEqual(HIST_RELATIVE_ERROR);
    expect(stats.sloAttainment).toBeCloseTo(0.25, 9);
  });

  it('ranks the worst task first', async () => {
    const plan = planQuery(wide);
    const targets = await readTargets(db);
    const stats = (await q.taskSums(plan)).map((s) => toTaskStats(s, emptyHistograms(), targets.byTask.get(s.task) ?? targets.defaults, 24 * HOUR));
    expect(stats.sort(worstFirst).map((s) => s.task)).toEqual(['sql', 'poet']);
  });

  it('chart series count requests per step, for all tasks and for one', async () => {
    const all = await q.series(wide, 3600, 3600);
    expect(all.map((p) => [new Date(p.t).getTime(), p.requests, p.errors])).toEqual([[base.getTime(), 7, 1]]);
    const minute = await q.series(exact, 600, 60);
    expect(minute.reduce((a, p) => a + p.requests, 0)).toBe(7);
    expect(minute.map((p) => p.requests)).toEqual([4, 1, 2]); // [0,10) min: s1-s3 + p1; [10,20): p2; [20,30): s4 s5
    const oneTask = await q.series(exact, 600, 60, 'sql');
    expect(oneTask.map((p) => p.requests)).toEqual([3, 2]);
  });

  it('lists recent errors newest first', async () => {
    const errors = await q.recentErrors(exact, 10);
    expect(errors.map((e) => [e.id, e.error])).toEqual([['s4', 'boom']]);
  });

  it('keeps the trigger histogram bounds equal to HIST_BOUNDS_MS', async () => {
    const [{ src }] = await db.query(`SELECT prosrc AS src FROM pg_proc WHERE proname = 'inlaid_rollup_request_records'`);
    const match = /ARRAY\[([0-9., ]+)\]::float8\[\]/.exec(src as string);
    expect(match?.[1]?.split(',').map(Number)).toEqual([...HIST_BOUNDS_MS]);
  });

  it('reads onboarding jobs with per-stage and per-layer progress', async () => {
    await db.query(
      `INSERT INTO task_jobs (id, task, kind, status, progress) VALUES ('j1', 'poet', 'onboard', 'quantizing', $1)`,
      [JSON.stringify({ stages: { validate: { status: 'done', startedAt: '2026-01-01T00:00:00Z' }, quantize: { status: 'running', startedAt: '2026-01-01T00:01:00Z' } }, layers: [{ layer: 0, numLayers: 4 }, { layer: 1, numLayers: 4 }] })],
    );
    const view = await readJobs(db);
    expect(view.available).toBe(true);
    expect(view.jobs[0]).toMatchObject({ task: 'poet', status: 'quantizing', stage: 'quantizing', fraction: 0.5, layersDone: 2, layersTotal: 4 });
    expect(view.jobs[0]?.stages.map((s) => [s.stage, s.fraction])).toEqual([['validate', 1], ['quantize', 0.5]]);
  });
});
