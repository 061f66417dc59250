/**
 * Seeding for the dashboard bench: N synthetic request records (INSERT ... SELECT generate_series, in
 * chunks) over 7 days for T tasks with a skewed traffic mix, bulk-loaded with the rollup trigger and the
 * record indexes off, then rolled up by the migration's own backfill statements; and the trigger's write
 * cost on gateway-sized batches.
 */
import { DataSource } from 'typeorm';
import {
  COUNT_GRAINS, countRollupSql, LATENCY_GRAINS, latencyRollupSql,
} from '../../libs/db/src/migrations/1764500000000-dashboard-fine-rollups';

export const CHUNK = 1_000_000;
export const BATCH = 200; // the gateway's RecordsService flushes at most 200 rows per insert
export const BATCHES = 50;
export const SPAN_MS = 7 * 24 * 3600 * 1000;

export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const out = await fn();
  return [out, performance.now() - t0];
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

async function insertRange(db: DataSource, lo: number, hi: number, from: Date, spanMs: number, tasks: number): Promise<number> {
  return (await timed(() => db.query(SEED_SQL, [lo, hi, from, spanMs, tasks])))[1];
}

export interface Seeded {
  readonly insertMs: number;
  readonly indexMs: number;
  readonly rollupMs: number;
}

/** Bulk load with the trigger and indexes off, rebuild the indexes, then one backfill of every rollup. */
export async function seed(db: DataSource, start: Date, records: number, tasks: number): Promise<Seeded> {
  await db.query(
    `INSERT INTO tasks (name, rank, slo_ttft_ms, slo_tpot_ms)
     SELECT 'task-' || lpad(k::text, 4, '0'), 8, CASE WHEN k % 5 = 0 THEN 500 END, CASE WHEN k % 5 = 0 THEN 60 END
     FROM generate_series(0, $1::int - 1) AS k`,
    [tasks],
  );
  await db.query('ALTER TABLE request_records DISABLE TRIGGER request_records_rollup');
  const indexes: Array<{ name: string; def: string }> = await db.query(
    `SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE tablename = 'request_records' AND indexname <> 'request_records_pkey'`);
  for (const ix of indexes) await db.query(`DROP INDEX "${ix.name}"`);
  await db.query('ALTER TABLE request_records DROP CONSTRAINT request_records_pkey');
  let insertMs = 0;
  for (let lo = 0; lo < records; lo += CHUNK) {
    const hi = Math.min(records, lo + CHUNK);
    insertMs += await insertRange(db, lo, hi, new Date(start.getTime() + (lo / records) * SPAN_MS), ((hi - lo) / records) * SPAN_MS, tasks);
    process.stdout.write(`inserted ${hi} records (${(insertMs / 1000).toFixed(0)} s)\n`);
  }
  const [, indexMs] = await timed(async () => {
    await db.query(`SET maintenance_work_mem = '512MB'`);
    await db.query('ALTER TABLE request_records ADD PRIMARY KEY (id)');
    for (const ix of indexes) await db.query(ix.def);
  });
  const [, rollupMs] = await timed(async () => {
    await db.query(`SET work_mem = '256MB'`);
    await db.query(countRollupSql('request_records', COUNT_GRAINS));
    await db.query(latencyRollupSql('request_records', LATENCY_GRAINS.filter((g) => g.perTask)));
    await db.query(latencyRollupSql('request_records', LATENCY_GRAINS.filter((g) => !g.perTask)));
    await db.query('RESET work_mem');
  });
  await db.query('ALTER TABLE request_records ENABLE TRIGGER request_records_rollup');
  await db.query('VACUUM ANALYZE');
  return { insertMs, indexMs, rollupMs };
}

export interface WriteCost {
  readonly withUs: number;
  readonly withoutUs: number;
}

/**
 * µs per record of BATCHES inserts of BATCH records each (arrivals in the last minute), alternating one batch
 * with the trigger and one without (so both see the same machine load); medians over the batches.
 */
export async function writeCost(db: DataSource, firstId: number, tasks: number): Promise<WriteCost> {
  const withMs: number[] = [];
  const withoutMs: number[] = [];
  try {
    for (let b = 0; b < 2 * BATCHES; b++) {
      const on = b % 2 === 0;
      await db.query(`ALTER TABLE request_records ${on ? 'ENABLE' : 'DISABLE'} TRIGGER request_records_rollup`);
      const lo = firstId + b * BATCH;
      (on ? withMs : withoutMs).push(await insertRange(db, lo, lo + BATCH, new Date(Date.now() - 60_000), 60_000, tasks));
    }
  } finally {
    await db.query('ALTER TABLE request_records ENABLE TRIGGER request_records_rollup');
  }
  // The rows the trigger added for these records stay in the rollups (an extra minute of traffic, now).
  await db.query(`DELETE FROM request_records WHERE id IN (SELECT 'bench-' || i FROM generate_series($1::bigint, $2::bigint - 1) i)`,
    [firstId, firstId + 2 * BATCHES * BATCH]);
  const perRecordUs = (ms: number[]) => ((ms.sort((a, b) => a - b)[Math.floor(ms.length / 2)] ?? 0) / BATCH) * 1000;
  return { withUs: perRecordUs(withMs), withoutUs: perRecordUs(withoutMs) };
}
