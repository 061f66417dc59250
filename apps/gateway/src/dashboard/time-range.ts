/**
 * Time ranges for the dashboard (pure): parsing the query (`range=1h` back from now, or `from`/`to` ISO
 * times, rounded out to whole minutes), choosing raw records or rollups (widened to whole hours; whole days
 * from the daily rollups), and picking a chart step.
 */
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
 * How to answer per-task questions over a range: short ranges read the raw records (exact, a few hundred
 * thousand rows at most through the arrival index); longer ones are widened to whole hours and read from
 * the per-day and per-hour rollups.
 */
export type QueryPlan =
  | { readonly kind: 'raw'; readonly range: TimeRange }
  | { readonly kind: 'rollup'; readonly range: TimeRange; readonly segments: readonly Segment[] };

export const RAW_MAX_MS = 3 * HOUR_MS;
const DAY_MS = 24 * HOUR_MS;

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
  if (t - f > MAX_RANGE_MS) throw new RangeError400(`the range is longer than ${MAX_RANGE_MS / (24 * HOUR_MS)} days`);
  return { from: new Date(f), to: new Date(t) };
}

export function planQuery(range: TimeRange): QueryPlan {
  // + a minute: rounding out to whole minutes makes a relative `3h` one minute longer.
  if (range.to.getTime() - range.from.getTime() <= RAW_MAX_MS + MINUTE_MS) return { kind: 'raw', range };
  const f = Math.floor(range.from.getTime() / HOUR_MS) * HOUR_MS;
  const t = Math.ceil(range.to.getTime() / HOUR_MS) * HOUR_MS;
  const widened = { from: new Date(f), to: new Date(t) };
  return { kind: 'rollup', range: widened, segments: planSegments(widened) };
}

/** Hour-aligned [from, to) → whole days from the daily rollups, the hours at either end from the hourly ones. */
export function planSegments(range: TimeRange): Segment[] {
  const f = range.from.getTime();
  const t = range.to.getTime();
  if (f % HOUR_MS !== 0 || t % HOUR_MS !== 0) throw new Error('planSegments needs an hour-aligned range');
  const d1 = Math.ceil(f / DAY_MS) * DAY_MS;
  const d2 = Math.floor(t / DAY_MS) * DAY_MS;
  if (d2 <= d1) return [{ resolutionS: 3600, from: range.from, to: range.to }];
  const parts: Segment[] = [
    { resolutionS: 3600, from: new Date(f), to: new Date(d1) },
    { resolutionS: 86400, from: new Date(d1), to: new Date(d2) },
    { resolutionS: 3600, from: new Date(d2), to: new Date(t) },
  ];
  return parts.filter((s) => s.to.getTime() > s.from.getTime());
}

/** The smallest step (s) that keeps a chart at or under maxPoints points, and the rollup it reads from. */
export function chartStep(range: TimeRange, maxPoints = 120): { stepS: number; resolutionS: Resolution } {
  const spanS = (range.to.getTime() - range.from.getTime()) / 1000;
  const stepS = STEPS_S.find((s) => spanS / s <= maxPoints) ?? STEPS_S[STEPS_S.length - 1] ?? 86400;
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
