/**
 * Settings of the dashboard's retention. Minute rollups are what grows fastest (per task per minute, plus up
 * to 498 latency-bucket rows per minute for all tasks together); past their retention the dashboard answers
 * from hour rollups, and past the hour rollups' retention from day rollups, which are kept forever. Request
 * records (one row per request) are kept INLAID_RECORD_DAYS. Pure: takes the env as an argument.
 */
export interface DashboardConfig {
  /** INLAID_ROLLUP_MINUTE_DAYS: days minute rollups are kept (default 7; 0 keeps them forever). */
  readonly minuteRollupDays: number;
  /** INLAID_ROLLUP_HOUR_DAYS: days hour rollups are kept (default 0: forever). */
  readonly hourRollupDays: number;
  /** INLAID_RECORD_DAYS: days request records are kept (default 0: forever). */
  readonly recordDays: number;
  /** INLAID_ROLLUP_SWEEP_S: seconds between retention sweeps (default 3600). */
  readonly sweepS: number;
}

type Env = Readonly<Record<string, string | undefined>>;

export class DashboardConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

function count(env: Env, name: string, fallback: number, min: number): number {
  const raw = env[name]?.trim() || String(fallback);
  if (!/^\d+$/.test(raw) || Number(raw) < min) {
    throw new DashboardConfigError(name, `expected an integer of at least ${min}, got "${raw}"`);
  }
  return Number(raw);
}

export function parseDashboardConfig(env: Env): DashboardConfig {
  return Object.freeze({
    minuteRollupDays: count(env, 'INLAID_ROLLUP_MINUTE_DAYS', 7, 0),
    hourRollupDays: count(env, 'INLAID_ROLLUP_HOUR_DAYS', 0, 0),
    recordDays: count(env, 'INLAID_RECORD_DAYS', 0, 0),
    sweepS: count(env, 'INLAID_ROLLUP_SWEEP_S', 3600, 1),
  });
}
