/**
 * Dashboard at scale: seeds N synthetic request records over the last 7 days (seed.ts), or reuses a database
 * already seeded with them (--reuse: pending migrations, with their backfill, are applied and timed), measures
 * the rollup trigger's cost on gateway-sized batches, then times the dashboard's queries (the same
 * DashboardQueries / DashboardService the gateway runs) for several ranges, the whole page's data (the five
 * API calls the page makes, concurrently), EXPLAIN ANALYZE of the main queries, and a raw-records percentile
 * query for comparison. Writes bench/results/<--out, default dashboard-<date>.md>. Run through
 * seed_and_measure.sh.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataSource } from 'typeorm';
import { dropDatabase, ensureDatabase, openDatabase } from '@inlaid/db';
import { DashboardQueries } from '../../apps/gateway/src/dashboard/dashboard.queries';
import { DashboardService } from '../../apps/gateway/src/dashboard/dashboard.service';
import { readJobs } from '../../apps/gateway/src/dashboard/task-jobs';
import { chartStep, parseRange, planQuery } from '../../apps/gateway/src/dashboard/time-range';
import { readTargets } from '../../apps/gateway/src/metrics/slo-targets';
import type { WorkersService } from '../../apps/gateway/src/workers/workers.service';
import type { RollupRetentionService } from '../../apps/gateway/src/dashboard/rollup-retention.service';
import { seed, Seeded, SPAN_MS, timed, writeCost } from './seed';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const RECORDS = flag('records', 10_000_000);
const TASKS = flag('tasks', 1000);
const RUNS = flag('runs', 5);
const url = process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/inlaid_bench_dashboard';

async function median(fn: () => Promise<unknown>, runs = RUNS): Promise<number> {
  await fn(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push((await timed(fn))[1]);
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)] ?? 0;
}

interface Row {
  readonly what: string;
  readonly range: string;
  readonly ms: number;
  readonly note: string;
}

const RANGES = ['15m', '1h', '6h', '24h', '7d', '30d'];
const ONE_TASK = 'task-0003';
/** The seeded records span 90 days: keep every minute rollup, as INLAID_ROLLUP_MINUTE_DAYS=0 would. */
const KEEP_ALL = { floor: () => null } as unknown as RollupRetentionService;

async function measure(db: DataSource, now: Date): Promise<Row[]> {
  const q = new DashboardQueries(db);
  const workers = { snapshots: () => [] } as unknown as WorkersService;
  const service = new DashboardService(db, workers, KEEP_ALL);
  const rows: Row[] = [];
  for (const range of RANGES) {
    const r = parseRange({ range }, now);
    const plan = planQuery(r);
    const { stepS, resolutionS } = chartStep(r);
    const sums = await q.taskSums(plan);
    const shown = (await service.overview(r, 50)).tasks.map((t) => t.task);
    const segs = plan.segments.map((s) => `${s.resolutionS}s×${(s.to.getTime() - s.from.getTime()) / (s.resolutionS * 1000)}`).join(' + ');
    rows.push({ what: 'overview: per-task sums', range, ms: await median(() => q.taskSums(plan)), note: `${plan.precision} precision, ${sums.length} tasks, ${segs}` });
    rows.push({ what: 'overview: latency histograms (overall + 50 shown tasks)', range, ms: await median(() => q.latencyHistograms(plan, shown)),
      note: plan.precision === 'minute' ? 'all tasks: rollups; shown tasks: their records' : 'rollups' });
    rows.push({ what: 'series (all tasks)', range, ms: await median(() => q.series(r, stepS, resolutionS)), note: `step ${stepS} s` });
    rows.push({ what: 'series (one task)', range, ms: await median(() => q.series(r, stepS, resolutionS, ONE_TASK)), note: ONE_TASK });
    rows.push({ what: 'task detail sums + histograms', range, ms: await median(() => Promise.all([q.taskSums(plan, ONE_TASK), q.latencyHistograms(plan, [ONE_TASK], false)])), note: ONE_TASK });
    rows.push({ what: 'recent errors (20)', range, ms: await median(() => q.recentErrors(r, 20)), note: '' });
    rows.push({ what: '**endpoint /api/overview** (sums, rank, histograms)', range, ms: await median(() => service.overview(r, 50)), note: 'limit 50' });
    rows.push({ what: '**endpoint /api/series** (one task)', range, ms: await median(() => service.series(r, ONE_TASK)), note: ONE_TASK });
    rows.push({
      what: '**whole page** (overview, series, workers, jobs, errors at once)', range, note: 'as the page polls',
      ms: await median(() => Promise.all([service.overview(r, 50), service.series(r, undefined), Promise.resolve(service.workerViews()), service.jobs(), service.errors(r, 20)])),
    });
  }
  rows.push({ what: 'SLO targets', range: '-', ms: await median(() => readTargets(db)), note: `${TASKS} tasks` });
  rows.push({ what: 'onboarding jobs', range: '-', ms: await median(() => readJobs(db)), note: '' });
  for (const range of ['1h', '24h']) {
    const r = parseRange({ range }, now);
    const raw = () => db.query(
      `SELECT task, count(*), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY first_token - arrival)
       FROM request_records WHERE arrival >= $1 AND arrival < $2 GROUP BY task`, [r.from, r.to]);
    rows.push({ what: 'for comparison: raw records, per-task TTFT percentiles', range, ms: await median(raw, 1), note: 'no rollups' });
  }
  return rows;
}

/** EXPLAIN (ANALYZE, BUFFERS) of the main queries: the plan lines that name a scan, and the execution time. */
async function explain(db: DataSource, now: Date): Promise<string[]> {
  const out: string[] = [];
  const explaining = { query: async (sql: string, params: unknown[]) => {
    const plan: Array<{ 'QUERY PLAN': string }> = await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, params);
    out.push(...plan.map((p) => p['QUERY PLAN']).filter((l) => /Scan|Execution Time/.test(l)).map((l) => `    ${l.trim()}`));
    return [];
  } } as unknown as DataSource;
  const q = new DashboardQueries(explaining);
  const service = new DashboardService(db, { snapshots: () => [] } as unknown as WorkersService, KEEP_ALL);
  for (const range of ['1h', '7d']) {
    const r = parseRange({ range }, now);
    const plan = planQuery(r);
    const shown = (await service.overview(r, 50)).tasks.map((t) => t.task);
    out.push(`- ${range}, per-task sums:`);
    await q.taskSums(plan);
    out.push(`- ${range}, latency histograms (overall + 50 shown tasks):`);
    await q.latencyHistograms(plan, shown);
  }
  return out;
}

async function sizes(db: DataSource): Promise<string[]> {
  const rows: Array<{ name: string; n: string; size: string }> = await db.query(
    `SELECT c.relname AS name, c.reltuples::bigint::text AS n, pg_size_pretty(pg_total_relation_size(c.oid)) AS size
     FROM pg_class c WHERE c.relname IN ('request_records', 'request_rollups', 'request_latency_rollups') ORDER BY 1`);
  const grains: Array<{ r: number; per: boolean; n: string }> = await db.query(
    `SELECT resolution_s AS r, task <> '' AS per, count(*)::text AS n FROM request_rollups GROUP BY 1, 2 ORDER BY 2, 1`);
  return [
    ...rows.map((r) => `| ${r.name} | ${Number(r.n).toLocaleString('en-US')} | ${r.size} |`),
    '',
    `request_rollups rows by grain: ${grains.map((g) => `${g.per ? 'per task' : 'all tasks'} ${g.r} s: ${Number(g.n).toLocaleString('en-US')}`).join('; ')}.`,
  ];
}

async function openSeeded(): Promise<{ db: DataSource; now: Date; seeded: Seeded | null; migrateMs: number }> {
  if (args.includes('--reuse') && !(await ensureDatabase(url))) {
    const [db, migrateMs] = await timed(() => openDatabase(url));
    const [{ n, last }] = await db.query(`SELECT count(*)::float8 AS n, max(arrival) AS last FROM request_records`);
    if (n < RECORDS) throw new Error(`--reuse: ${url} holds ${n} records, fewer than ${RECORDS}`);
    // What autovacuum does after a backfill (it is off on the bench machine): sets the visibility map, so
    // the histogram reads are index-only.
    await db.query('VACUUM ANALYZE request_rollups, request_latency_rollups');
    return { db, now: new Date(new Date(last).getTime() + 1000), seeded: null, migrateMs };
  }
  await dropDatabase(url);
  const [db, migrateMs] = await timed(() => openDatabase(url));
  const now = new Date();
  return { db, now, seeded: await seed(db, new Date(now.getTime() - SPAN_MS), RECORDS, TASKS), migrateMs };
}

async function main(): Promise<void> {
  const { db, now, seeded, migrateMs } = await openSeeded();
  try {
    const cost = await writeCost(db, 2 * RECORDS, TASKS);
    process.stdout.write(`write cost: ${JSON.stringify(cost)}\n`);
    const rows = await measure(db, now);
    const plans = await explain(db, now);
    const [{ version }] = await db.query('SELECT version()');
    const date = new Date().toISOString().slice(0, 10);
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const command = `bash bench/dashboard/seed_and_measure.sh ${args.join(' ')}`.trim();
    const md = [
      `# Dashboard queries at ${RECORDS.toLocaleString('en-US')} request records (${date})`,
      '',
      `- Command: \`${command}\``,
      `- Date: ${new Date().toISOString()} (data ends at ${now.toISOString()}; ranges are back from there)`,
      `- Machine: ${cpu}, ${os.cpus().length} cores (shared with other work), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM; ${String(version).split(',')[0]}`,
      `- Data: ${RECORDS.toLocaleString('en-US')} records over 7 days for ${TASKS} tasks (skewed: task k drawn as floor(T·u³)), 94% completed, 2% aborted, 2% failed, 2% rejected; 1 in 5 tasks has its own SLO targets.`,
      seeded === null
        ? `- Database reused (already seeded); opening it, with any pending migrations and their backfill over the existing records, took ${(migrateMs / 1000).toFixed(0)} s; then VACUUM ANALYZE of the rollup tables.`
        : `- Seeding: bulk insert with the trigger and record indexes off ${(seeded.insertMs / 1000).toFixed(0)} s; index rebuild ${(seeded.indexMs / 1000).toFixed(0)} s; rollup backfill (the migration's statements) ${(seeded.rollupMs / 1000).toFixed(0)} s.`,
      `- Write overhead of the rollup trigger on gateway-sized batches (100 inserts of 200 rows into the full table, alternately with and without the trigger; medians): ${cost.withUs.toFixed(0)} µs/record with it, ${cost.withoutUs.toFixed(0)} µs/record without, so ${(cost.withUs - cost.withoutUs).toFixed(0)} µs/record for the rollups.`,
      '',
      '| table | rows (estimate) | size with indexes |',
      '|---|---:|---:|',
      ...(await sizes(db)),
      '',
      `Query timings (median of ${RUNS} warm runs after one warm-up, ms; one run for the raw comparison):`,
      '',
      '| query | range | ms | note |',
      '|---|---|---:|---|',
      ...rows.map((r) => `| ${r.what} | ${r.range} | ${r.ms.toFixed(1)} | ${r.note} |`),
      '',
      'EXPLAIN (ANALYZE, BUFFERS), scan nodes:',
      '',
      ...plans,
      '',
    ].join('\n');
    const dir = path.join(__dirname, '..', 'results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, option('out') ?? `dashboard-${date}.md`);
    writeFileSync(file, md);
    process.stdout.write(md + `\nwrote ${file}\n`);
  } finally {
    await db.destroy();
    if (!args.includes('--keep')) await dropDatabase(url);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
