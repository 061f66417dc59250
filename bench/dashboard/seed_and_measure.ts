/**
 * Dashboard at scale: seeds N synthetic request records (INSERT ... SELECT generate_series, in chunks) over
 * the last 7 days for T tasks with a skewed traffic mix, rolls them up, measures the trigger's cost on
 * gateway-sized batches, then times the dashboard's queries (the same DashboardQueries / readTargets / readJobs
 * the gateway runs) for several ranges, plus a raw-records percentile query for comparison. Writes
 * bench/results/dashboard-<date>.md. Run through seed_and_measure.sh.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataSource } from 'typeorm';
import { dropDatabase, openDatabase } from '@inlaid/db';
import { DashboardQueries } from '../../apps/gateway/src/dashboard/dashboard.queries';
import { readJobs } from '../../apps/gateway/src/dashboard/task-jobs';
import { chartStep, parseRange, planQuery } from '../../apps/gateway/src/dashboard/time-range';
import { readTargets } from '../../apps/gateway/src/metrics/slo-targets';
import { rollupStatements } from '../../libs/db/src/migrations/1738000000000-dashboard-rollups';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const RECORDS = flag('records', 10_000_000);
const TASKS = flag('tasks', 1000);
const CHUNK = 1_000_000;
const BATCH = 200; // the gateway's RecordsService flushes at most 200 rows per insert
const SPAN_MS = 7 * 24 * 3600 * 1000;
const url = process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/inlaid_bench_dashboard';

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const out = await fn();
  return [out, performance.now() - t0];
}

async function median(fn: () => Promise<unknown>, runs = 3): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push((await timed(fn))[1]);
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)] ?? 0;
}

const SEED_SQL = `
INSERT INTO request_records (id, task, api, arrival, first_token, finish, tokens_in, tokens_out, status, finish_reason, error, worker)
SELECT 'bench-' || i, 'task-' || lpad(k::text, 4, '0'), 'chat.completions', arrival,
  CASE WHEN status <> 'rejected' THEN arrival + ttft * interval '1 millisecond' END,
  CASE WHEN status <> 'rejected' THEN arrival + (ttft + tpot * (n_out - 1)) * interval '1 millisecond' ELSE arrival END,
  n_in, CASE WHEN status <> 'rejected' THEN n_out ELSE 0 END, status,
  CASE WHEN status = 'completed' THEN 'stop' END,
  CASE WHEN status IN ('failed', 'rejected') THEN 'synthetic error' END, 'worker-' || (i % 4)
FROM (
  SELECT i, k, $3::timestamptz + ((i - $1) * $4::float8 / ($2 - $1)) * interval '1 millisecond' AS arrival,
    CASE WHEN r2 < 0.94 THEN 'completed' WHEN r2 < 0.96 THEN 'aborted' WHEN r2 < 0.98 THEN 'failed' ELSE 'rejected' END AS status,
    20 + (40 + (k % 10) * 60) * -ln(1 - r3) AS ttft, 8 + (k % 7) * 12 * r4 + 15 * r3 AS tpot,
    1 + floor(r5 * r5 * 400)::int AS n_out, 10 + floor(r4 * 500)::int AS n_in
  FROM (
    SELECT i, floor($5::int * power(random(), 3))::int AS k, random() AS r2, random() AS r3, random() AS r4, random() AS r5
    FROM generate_series($1::bigint, $2::bigint - 1) AS i
  ) g
) v`;

async function insertRange(db: DataSource, lo: number, hi: number, from: Date, spanMs: number): Promise<number> {
  const [, ms] = await timed(() => db.query(SEED_SQL, [lo, hi, from, spanMs, TASKS]));
  return ms;
}

interface Seeded {
  readonly insertMs: number;
  readonly indexMs: number;
  readonly rollupMs: number;
  readonly batchWithUs: number;
  readonly batchWithoutUs: number;
}

/**
 * Bulk load with the trigger off, then one backfill through the trigger's own statements (what the
 * migration does on an existing table), then the trigger's incremental cost on gateway-sized batches.
 */
async function seed(db: DataSource, start: Date): Promise<Seeded> {
  await db.query(
    `INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms)
     SELECT 'task-' || lpad(k::text, 4, '0'), 8, CASE WHEN k % 5 = 0 THEN 500 END, CASE WHEN k % 5 = 0 THEN 60 END
     FROM generate_series(0, $1::int - 1) AS k`,
    [TASKS],
  );
  await db.query('ALTER TABLE request_records DISABLE TRIGGER request_records_rollup');
  // Bulk-load practice: drop the record indexes, load, rebuild them (their build time is reported).
  const indexes: Array<{ name: string; def: string }> = await db.query(
    `SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE tablename = 'request_records' AND indexname <> 'request_records_pkey'`);
  for (const ix of indexes) await db.query(`DROP INDEX "${ix.name}"`);
  await db.query('ALTER TABLE request_records DROP CONSTRAINT request_records_pkey');
  let insertMs = 0;
  for (let lo = 0; lo < RECORDS; lo += CHUNK) {
    const hi = Math.min(RECORDS, lo + CHUNK);
    insertMs += await insertRange(db, lo, hi, new Date(start.getTime() + (lo / RECORDS) * SPAN_MS), ((hi - lo) / RECORDS) * SPAN_MS);
    process.stdout.write(`inserted ${hi} records (${(insertMs / 1000).toFixed(0)} s)\n`);
  }
  const [, indexMs] = await timed(async () => {
    await db.query(`SET maintenance_work_mem = '512MB'`);
    await db.query('ALTER TABLE request_records ADD PRIMARY KEY (id)');
    for (const ix of indexes) await db.query(ix.def);
  });
  process.stdout.write(`indexes rebuilt in ${(indexMs / 1000).toFixed(0)} s\n`);
  const [, rollupMs] = await timed(async () => {
    await db.query(`SET work_mem = '256MB'`);
    for (const sql of rollupStatements('request_records')) await db.query(sql);
    await db.query('RESET work_mem');
  });
  process.stdout.write(`rolled up in ${(rollupMs / 1000).toFixed(0)} s\n`);
  await db.query('ALTER TABLE request_records ENABLE TRIGGER request_records_rollup');
  await db.query('ANALYZE');
  const batches = 50;
  let batchMs = 0;
  for (let b = 0; b < batches; b++) {
    const lo = RECORDS + b * BATCH;
    batchMs += await insertRange(db, lo, lo + BATCH, new Date(Date.now() - 60_000), 60_000);
  }
  await db.query(`DELETE FROM request_records WHERE id IN (SELECT 'bench-' || i FROM generate_series($1::bigint, $2::bigint - 1) i)`,
    [RECORDS, RECORDS + batches * BATCH]);
  const [, plainMs] = await timed(async () => {
    await db.query('ALTER TABLE request_records DISABLE TRIGGER request_records_rollup');
    for (let b = 0; b < batches; b++) await insertRange(db, RECORDS + b * BATCH, RECORDS + (b + 1) * BATCH, new Date(Date.now() - 60_000), 60_000);
    await db.query('ALTER TABLE request_records ENABLE TRIGGER request_records_rollup');
  });
  await db.query(`DELETE FROM request_records WHERE id IN (SELECT 'bench-' || i FROM generate_series($1::bigint, $2::bigint - 1) i)`,
    [RECORDS, RECORDS + batches * BATCH]);
  process.stdout.write(`batches: ${batchMs.toFixed(0)} ms with the trigger, ${plainMs.toFixed(0)} ms without\n`);
  const per = (ms: number) => (ms / (batches * BATCH)) * 1000;
  return { insertMs, indexMs, rollupMs, batchWithUs: per(batchMs), batchWithoutUs: per(plainMs) };
}

interface Row {
  readonly what: string;
  readonly range: string;
  readonly ms: number;
  readonly note: string;
}

async function measure(db: DataSource, now: Date): Promise<Row[]> {
  const q = new DashboardQueries(db);
  const rows: Row[] = [];
  for (const range of ['15m', '1h', '6h', '24h', '7d']) {
    const r = parseRange({ range }, now);
    const segs = planQuery(r);
    const { stepS, resolutionS } = chartStep(r);
    const [sums] = await timed(() => q.taskSums(segs));
    const [hist] = await timed(() => q.taskHistograms(segs));
    rows.push({ what: 'overview: per-task sums', range, ms: await median(() => q.taskSums(segs)), note: `${segs.kind}, ${sums.length} tasks` });
    rows.push({ what: 'overview: per-task latency histograms', range, ms: await median(() => q.taskHistograms(segs)), note: `${hist.length} rows` });
    rows.push({ what: 'series (all tasks)', range, ms: await median(() => q.series(r, stepS, resolutionS)), note: `step ${stepS} s` });
    rows.push({ what: 'series (one task)', range, ms: await median(() => q.series(r, stepS, resolutionS, 'task-0003')), note: 'task-0003' });
    rows.push({ what: 'task detail sums + histograms', range, ms: await median(() => Promise.all([q.taskSums(segs, 'task-0003'), q.taskHistograms(segs, 'task-0003')])), note: 'task-0003' });
    rows.push({ what: 'recent errors (20)', range, ms: await median(() => q.recentErrors(r, 20)), note: '' });
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

async function sizes(db: DataSource): Promise<string[]> {
  const rows: Array<{ name: string; n: string; size: string }> = await db.query(
    `SELECT c.relname AS name, c.reltuples::bigint::text AS n, pg_size_pretty(pg_total_relation_size(c.oid)) AS size
     FROM pg_class c WHERE c.relname IN ('request_records', 'request_rollups', 'request_rollup_hist') ORDER BY 1`);
  return rows.map((r) => `| ${r.name} | ${Number(r.n).toLocaleString('en-US')} | ${r.size} |`);
}

async function main(): Promise<void> {
  await dropDatabase(url);
  const db = await openDatabase(url);
  const now = new Date();
  const start = new Date(now.getTime() - SPAN_MS);
  try {
    const seeded = await seed(db, start);
    const rows = await measure(db, now);
    const [{ version }] = await db.query('SELECT version()');
    const date = now.toISOString().slice(0, 10);
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const command = `bash bench/dashboard/seed_and_measure.sh ${args.join(' ')}`.trim();
    const md = [
      `# Dashboard queries at ${RECORDS.toLocaleString('en-US')} request records (${date})`,
      '',
      `- Command: \`${command}\``,
      `- Date: ${now.toISOString()}`,
      `- Machine: ${cpu}, ${os.cpus().length} cores (shared with other work), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM; ${String(version).split(',')[0]}`,
      `- Data: ${RECORDS.toLocaleString('en-US')} records over 7 days for ${TASKS} tasks (skewed: task k drawn as floor(T·u³)), 94% completed, 2% aborted, 2% failed, 2% rejected; 1 in 5 tasks has its own SLO targets.`,
      `- Seeding: INSERT ... SELECT generate_series in chunks of ${CHUNK.toLocaleString('en-US')} with the rollup trigger and the record indexes off: ${(seeded.insertMs / 1000).toFixed(0)} s; rebuilding the ${'5'} record indexes: ${(seeded.indexMs / 1000).toFixed(0)} s; then one rollup backfill (the trigger's statements over the whole table, as the migration does): ${(seeded.rollupMs / 1000).toFixed(0)} s.`,
      `- Write overhead of the rollup trigger on gateway-sized batches (50 inserts of ${BATCH} rows into the full table): ${seeded.batchWithUs.toFixed(0)} µs/record with it, ${seeded.batchWithoutUs.toFixed(0)} µs/record without.`,
      '',
      '| table | rows (estimate) | size with indexes |',
      '|---|---:|---:|',
      ...(await sizes(db)),
      '',
      'Query timings (median of 3 warm runs, ms; one run for the raw comparison):',
      '',
      '| query | range | ms | note |',
      '|---|---|---:|---|',
      ...rows.map((r) => `| ${r.what} | ${r.range} | ${r.ms.toFixed(1)} | ${r.note} |`),
      '',
    ].join('\n');
    const dir = path.join(__dirname, '..', 'results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `dashboard-${date}.md`);
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
