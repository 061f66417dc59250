/**
 * Time ranges for the dashboard (pure): parsing the query (`range=1h` back from now, or `from`/`to` ISO
 * times, rounded out to whole minutes), splitting it into rollup segments (to the minute up to 3 h, widened to
 * whole hours beyond, to whole days before the hour rollups' retention), and picking a chart step.
 */
import { KEEP_ALL, laterFloor, RetentionFloors } from './rollup-retention';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const UNITS_MS: Record<string, number> = { m: MINUTE_MS, h: HOUR_MS, d: 24 * HOUR_MS };
export const MAX_RANGE_MS = 90 * 24 * HOUR_MS;
const STEPS_S = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600];

export class RangeError400 extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RangeError400';
  }
}

export interface TimeRange {
  readonly from: Date;
  readonly to: Date;
}

export type Resolution = 60 | 3600 | 86400;

export interface Segment {
  readonly resolutionS: Resolution;
  readonly from: Date;
  readonly to: Date;
}

/**
 * How to answer questions over a range: every part of it is read from the rollups (request_rollups and
 * request_latency_rollups) as segments of whole days, hours and minutes. Ranges up to 3 h are answered to
 * the minute (whole hours in the middle, minutes at the ends); longer ones are widened to whole hours (whole
 * days in the middle, hours at the ends), which bounds the rows read per task to about 50 for any range.
 */
export type Precision = 'minute' | 'hour' | 'day';

export interface QueryPlan {
  readonly precision: Precision;
  readonly range: TimeRange;
  readonly segments: readonly Segment[];
}

export const MINUTE_PRECISION_MAX_MS = 3 * HOUR_MS;
const LEVELS: readonly Resolution[] = [86400, 3600, 60];

function parseDate(name: string, raw: string): Date {
  const d = new Date(raw);
  if (Number.isNaN(d.getTime())) throw new RangeError400(`${name}: not a date: "${raw}"`);
  return d;
}

/** Query → [from, to) rounded out to whole minutes. Defaults to the last hour. */
export function parseRange(query: { range?: string; from?: string; to?: string }, now: Date): TimeRange {
  let from: Date;
  let to: Date;
  if (query.from !== undefined || query.to !== undefined) {
    if (query.from === undefined || query.to === undefined) throw new RangeError400('give both from and to, or range');
    from = parseDate('from', query.from);
    to = parseDate('to', query.to);
  } else {
    const raw = query.range ?? '1h';
    const match = /^(\d+)([mhd])$/.exec(raw);
    if (match === null) throw new RangeError400(`range: expected e.g. 15m, 6h or 7d, got "${raw}"`);
    to = now;
    from = new Date(now.getTime() - Number(match[1]) * (UNITS_MS[match[2] ?? 'm'] ?? MINUTE_MS));
  }
  const f = Math.floor(from.getTime() / MINUTE_MS) * MINUTE_MS;
  const t = Math.ceil(to.getTime() / MINUTE_MS) * MINUTE_MS;
  if (t <= f) throw new RangeError400('the range is empty: from must be before to');
  // A huge relative range (200000000d) puts `from` before the earliest Date: NaN, which no comparison catches.
  if (!Number.isFinite(f) || !Number.isFinite(t) || t - f > MAX_RANGE_MS) throw new RangeError400(`the range is longer than ${MAX_RANGE_MS / (24 * HOUR_MS)} days`);
  return { from: new Date(f), to: new Date(t) };
}

/** Floors as given: a Date is the minute rollups' floor alone, null keeps everything. */
export function asFloors(floors: RetentionFloors | Date | null): RetentionFloors {
  if (floors === null) return KEEP_ALL;
  return floors instanceof Date ? { ...KEEP_ALL, minute: floors } : floors;
}

function widen(range: TimeRange, unitMs: number): TimeRange {
  return {
    from: new Date(Math.floor(range.from.getTime() / unitMs) * unitMs),
    to: new Date(Math.ceil(range.to.getTime() / unitMs) * unitMs),
  };
}

const before = (t: Date, floor: Date | null): boolean => floor !== null && t.getTime() < floor.getTime();

/**
 * `floors`: what retention still keeps (rollup-retention.ts). Minute precision reads minute rollups and the
 * tasks' records, so a range that starts before either floor is answered from hour rollups whatever its
 * length; one that starts before the hour rollups' floor is widened to whole days and read from day rollups.
 */
export function planQuery(range: TimeRange, floors: RetentionFloors | Date | null = null): QueryPlan {
  const f = asFloors(floors);
  // + a minute: rounding out to whole minutes makes a relative `3h` one minute longer.
  const short = range.to.getTime() - range.from.getTime() <= MINUTE_PRECISION_MAX_MS + MINUTE_MS;
  if (short && !before(range.from, laterFloor(f.minute, f.records))) {
    return { precision: 'minute', range, segments: planSegments(range, 60) };
  }
  const hours = widen(range, HOUR_MS);
  if (!before(hours.from, f.hour)) return { precision: 'hour', range: hours, segments: planSegments(hours, 3600) };
  const days = widen(range, 24 * HOUR_MS);
  return { precision: 'day', range: days, segments: planSegments(days, 86400) };
}

/**
 * A [from, to) aligned to `finestS` as the fewest segments: the coarsest whole units in the middle, finer
 * ones at either end (e.g. whole days, then hours, then minutes), in time order.
 */
export function planSegments(range: TimeRange, finestS: Resolution = 3600): Segment[] {
  const f = range.from.getTime();
  const t = range.to.getTime();
  if (f % (finestS * 1000) !== 0 || t % (finestS * 1000) !== 0) {
    throw new Error(`planSegments needs an ${finestS === 3600 ? 'hour' : finestS === 60 ? 'minute' : 'day'}-aligned range`);
  }
  const levels = LEVELS.filter((l) => l >= finestS);
  const split = (from: number, to: number, i: number): Segment[] => {
    const level = levels[i];
    if (level === undefined || to <= from) return [];
    const unit = level * 1000;
    const a = Math.ceil(from / unit) * unit;
    const b = Math.floor(to / unit) * unit;
    if (b <= a) return split(from, to, i + 1);
    return [...split(from, a, i + 1), { resolutionS: level, from: new Date(a), to: new Date(b) }, ...split(b, to, i + 1)];
  };
  return split(f, t, 0);
}

/**
 * The smallest step (s) that keeps a chart at or under maxPoints points, and the rollup it reads from; whole
 * hours at least when the range starts before the minute rollups' floor, whole days before the hour rollups'.
 */
export function chartStep(
  range: TimeRange, maxPoints = 120, floors: RetentionFloors | Date | null = null,
): { stepS: number; resolutionS: Resolution } {
  const f = asFloors(floors);
  const spanS = (range.to.getTime() - range.from.getTime()) / 1000;
  const minStepS = before(range.from, f.hour) ? 86400 : before(range.from, f.minute) ? 3600 : 60;
  const steps = STEPS_S.filter((s) => s >= minStepS);
  const stepS = steps.find((s) => spanS / s <= maxPoints) ?? steps[steps.length - 1] ?? 86400;
  return { stepS, resolutionS: stepS % 86400 === 0 ? 86400 : stepS % 3600 === 0 ? 3600 : 60 };
}

/** The start of every step of the chart (aligned like Postgres date_bin with origin 2000-01-01Z). */
export function stepStarts(range: TimeRange, stepS: number): Date[] {
  const origin = Date.UTC(2000, 0, 1);
  const stepMs = stepS * 1000;
  const first = origin + Math.floor((range.from.getTime() - origin) / stepMs) * stepMs;
  const out: Date[] = [];
  for (let t = first; t < range.to.getTime(); t += stepMs) out.push(new Date(t));
  return out;
}
