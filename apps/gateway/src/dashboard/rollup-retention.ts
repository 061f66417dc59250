/**
 * Retention of the dashboard's data (pure: the floors and the SQL). Minute rollups, hour rollups and request
 * records older than their floor are deleted in bounded batches; day rollups are kept forever.
 * request_rollups is keyed by (resolution_s, bucket_start, task), so a resolution's old rows are one
 * primary-key range; request_latency_rollups keeps minute rows only for all tasks together (task ''), and
 * hour rows per task; request_records is read through its arrival index. Deleting records leaves the rollups
 * as they are (the rollup trigger runs on INSERT only).
 */
import { ALL_TASKS } from './dashboard.queries';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Days each kind of row is kept; 0 keeps it forever. */
export interface RetentionDays {
  readonly minuteRollupDays: number;
  readonly hourRollupDays: number;
  readonly recordDays: number;
}

/** The oldest time each kind of row is kept for (null: kept forever). Floors only move forward. */
export interface RetentionFloors {
  readonly minute: Date | null;
  readonly hour: Date | null;
  readonly records: Date | null;
}

export const KEEP_ALL: RetentionFloors = Object.freeze({ minute: null, hour: null, records: null });

function floorAt(now: Date, days: number, alignMs: number): Date | null {
  if (days <= 0) return null;
  return new Date(Math.floor((now.getTime() - days * DAY_MS) / alignMs) * alignMs);
}

/**
 * The oldest time minute rollups are kept for, or null when they are kept forever (days = 0). Aligned down
 * to the hour, so it only moves forward and a range planned against it finds every minute row it reads.
 */
export function minuteFloor(now: Date, days: number): Date | null {
  return floorAt(now, days, HOUR_MS);
}

/** Every floor: minute rollups and records aligned to the hour, hour rollups to the day. */
export function retentionFloors(now: Date, days: RetentionDays): RetentionFloors {
  return {
    minute: minuteFloor(now, days.minuteRollupDays),
    hour: floorAt(now, days.hourRollupDays, DAY_MS),
    records: floorAt(now, days.recordDays, HOUR_MS),
  };
}

/** The later of two floors (null = no floor). */
export function laterFloor(a: Date | null, b: Date | null): Date | null {
  if (a === null) return b;
  if (b === null) return a;
  return a.getTime() >= b.getTime() ? a : b;
}

export interface RetentionStatement {
  readonly table: string;
  readonly sql: string;
  readonly params: readonly unknown[];
}

function rollupStatement(table: string, resolutionS: number, floor: Date, batch: number, allTasksOnly: boolean): RetentionStatement {
  const task = allTasksOnly ? 'task = $3 AND ' : '';
  return {
    table,
    sql: `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM ${table} WHERE ${task}resolution_s = ${resolutionS} AND bucket_start < $1 LIMIT $2))`,
    params: allTasksOnly ? [floor, batch, ALL_TASKS] : [floor, batch],
  };
}

/**
 * One batch per table and kind: delete at most `batch` rows older than their floor. The `table` label names
 * the kind (`request_rollups`, `request_rollups/hour`, ...); a Date argument is the minute floor alone.
 */
export function retentionStatements(floors: RetentionFloors | Date, batch: number): RetentionStatement[] {
  if (!Number.isInteger(batch) || batch < 1) throw new Error('batch must be a positive integer');
  const f: RetentionFloors = floors instanceof Date ? { ...KEEP_ALL, minute: floors } : floors;
  const out: RetentionStatement[] = [];
  if (f.minute !== null) {
    out.push(rollupStatement('request_rollups', 60, f.minute, batch, false));
    out.push(rollupStatement('request_latency_rollups', 60, f.minute, batch, true));
  }
  if (f.hour !== null) {
    out.push({ ...rollupStatement('request_rollups', 3600, f.hour, batch, false), table: 'request_rollups/hour' });
    out.push({ ...rollupStatement('request_latency_rollups', 3600, f.hour, batch, false), table: 'request_latency_rollups/hour' });
  }
  if (f.records !== null) {
    out.push({
      table: 'request_records',
      sql: `DELETE FROM request_records WHERE ctid = ANY (ARRAY(
              SELECT ctid FROM request_records WHERE arrival < $1 LIMIT $2))`,
      params: [f.records, batch],
    });
  }
  return out;
}
