/**
 * Retention of the dashboard's minute rollups (pure: the floor and the SQL). Minute rows older than the
 * floor are deleted in bounded batches, each one a primary-key range scan: request_rollups is keyed by
 * (resolution_s, bucket_start, task), and request_latency_rollups keeps minute rows only for all tasks
 * together (task '', key (task, resolution_s, bucket_start, ...)). Hour and day rollups and the records stay.
 */
import { ALL_TASKS } from './dashboard.queries';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/**
 * The oldest time minute rollups are kept for, or null when they are kept forever (days = 0). Aligned down
 * to the hour, so it only moves forward and a range planned against it finds every minute row it reads.
 */
export function minuteFloor(now: Date, days: number): Date | null {
  if (days <= 0) return null;
  return new Date(Math.floor((now.getTime() - days * DAY_MS) / HOUR_MS) * HOUR_MS);
}

export interface RetentionStatement {
  readonly table: string;
  readonly sql: string;
  readonly params: readonly unknown[];
}

/** One batch per table: delete at most `batch` minute rows older than `floor`. */
export function retentionStatements(floor: Date, batch: number): RetentionStatement[] {
  if (!Number.isInteger(batch) || batch < 1) throw new Error('batch must be a positive integer');
  return [
    {
      table: 'request_rollups',
      sql: `DELETE FROM request_rollups WHERE ctid = ANY (ARRAY(
              SELECT ctid FROM request_rollups WHERE resolution_s = 60 AND bucket_start < $1 LIMIT $2))`,
      params: [floor, batch],
    },
    {
      table: 'request_latency_rollups',
      sql: `DELETE FROM request_latency_rollups WHERE ctid = ANY (ARRAY(
              SELECT ctid FROM request_latency_rollups
              WHERE task = $3 AND resolution_s = 60 AND bucket_start < $1 LIMIT $2))`,
      params: [floor, batch, ALL_TASKS],
    },
  ];
}
