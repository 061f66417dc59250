/**
 * Settings of the gateway's request scheduler (@inlaid/scheduling): policy, grouping, length predictor,
 * default per-task SLOs and the capacity the gateway assumes for each worker. Pure: takes the env as an
 * argument and names the bad variable. The name lists mirror @inlaid/scheduling (a gateway spec checks it).
 */
export const SCHEDULING_POLICIES = ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq'] as const;
export const LENGTH_PREDICTORS = ['quantile', 'mean', 'none', 'prompt'] as const;

export type SchedulingPolicy = (typeof SCHEDULING_POLICIES)[number];
export type LengthPredictorName = (typeof LENGTH_PREDICTORS)[number];

export interface SchedulingConfig {
  /** INLAID_POLICY (default inlaid). */
  readonly policy: SchedulingPolicy;
  /** INLAID_BETA: most distinct tasks per batch for `inlaid` (default 10). */
  readonly beta: number;
  /** INLAID_PREDICTOR: output-length predictor (default quantile). */
  readonly predictor: LengthPredictorName;
  /** INLAID_SLO_TTFT_MS / INLAID_SLO_TPOT_MS: the SLO of every task (defaults 5000 / 200). */
  readonly sloTtftMs: number;
  readonly sloTpotMs: number;
  /** INLAID_MAX_LORAS: distinct adapters per worker batch for `fcfs-maxloras` (default 4). */
  readonly maxLoras: number;
  /** INLAID_ABORT_HOPELESS=true: refuse queued requests whose TTFT SLO already passed (default false). */
  readonly abortHopeless: boolean;
  /**
   * INLAID_TRIAGE (default true): `inlaid` orders a waiting request past its TTFT SLO after every request that
   * can still meet its SLO (deferred, not dropped; @inlaid/scheduling triage.ts).
   */
  readonly triage: boolean;
  /**
   * INLAID_BATCH_NEED_ROOM (default true): `inlaid`'s batched prefill admission releases a held group only
   * when the worker has the free rows and KV for it (the room rule of batch-gate.ts).
   */
  readonly batchNeedRoom: boolean;
  /**
   * INLAID_BUDGET_FIXED_PREFILL (default false): `inlaid`'s step budget counts a prefill step's fixed cost in
   * its prefill share (measured, not the default: see bench/results/sim-evidence-2026-11-29-v4.md).
   */
  readonly budgetFixedPrefill: boolean;
  /** INLAID_SCHED_MAX_ROWS: requests admitted to one worker at once (its --max-num-seqs plus a small buffer). */
  readonly workerRows: number;
  /** INLAID_SCHED_MAX_PREFILL_TOKENS: prompt tokens admitted to one worker per scheduling pass. */
  readonly workerPrefillTokens: number;
  /** INLAID_SCHED_TICK_MS: period of the scheduling timer (passes also run on arrivals, finishes, states). */
  readonly tickMs: number;
  /** INLAID_PREDICTOR_TRAIN_RECORDS: most recent request records the predictor learns from at start-up. */
  readonly trainRecords: number;
  /**
   * INLAID_COST_MODEL: path of the workers' calibrated step cost model (JSON, the format of
   * libs/sim/calibration/*.json), loaded and validated at start-up; null (default) = no step cost.
   */
  readonly costModelPath: string | null;
}

type Env = Readonly<Record<string, string | undefined>>;

export class SchedulingConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

function raw(env: Env, name: string, fallback: string): string {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? fallback : v;
}

function oneOf<T extends string>(env: Env, name: string, options: readonly T[], fallback: T): T {
  const v = raw(env, name, fallback);
  if (!(options as readonly string[]).includes(v)) throw new SchedulingConfigError(name, `expected one of ${options.join(', ')}, got "${v}"`);
  return v as T;
}

function int(env: Env, name: string, fallback: number, min: number): number {
  const v = raw(env, name, String(fallback));
  if (!/^\d+$/.test(v) || Number(v) < min) throw new SchedulingConfigError(name, `expected an integer >= ${min}, got "${v}"`);
  return Number(v);
}

function positiveMs(env: Env, name: string, fallback: number): number {
  const v = raw(env, name, String(fallback));
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new SchedulingConfigError(name, `expected a positive number of milliseconds, got "${v}"`);
  return n;
}

function bool(env: Env, name: string, fallback = false): boolean {
  const v = raw(env, name, String(fallback)).toLowerCase();
  if (v !== 'true' && v !== 'false') throw new SchedulingConfigError(name, `expected true or false, got "${v}"`);
  return v === 'true';
}

export function parseSchedulingConfig(env: Env): SchedulingConfig {
  return Object.freeze({
    policy: oneOf(env, 'INLAID_POLICY', SCHEDULING_POLICIES, 'inlaid'),
    beta: int(env, 'INLAID_BETA', 10, 1),
    predictor: oneOf(env, 'INLAID_PREDICTOR', LENGTH_PREDICTORS, 'quantile'),
    sloTtftMs: positiveMs(env, 'INLAID_SLO_TTFT_MS', 5000),
    sloTpotMs: positiveMs(env, 'INLAID_SLO_TPOT_MS', 200),
    maxLoras: int(env, 'INLAID_MAX_LORAS', 4, 1),
    abortHopeless: bool(env, 'INLAID_ABORT_HOPELESS'),
    triage: bool(env, 'INLAID_TRIAGE', true),
    batchNeedRoom: bool(env, 'INLAID_BATCH_NEED_ROOM', true),
    budgetFixedPrefill: bool(env, 'INLAID_BUDGET_FIXED_PREFILL'),
    workerRows: int(env, 'INLAID_SCHED_MAX_ROWS', 72, 1),
    workerPrefillTokens: int(env, 'INLAID_SCHED_MAX_PREFILL_TOKENS', 2048, 1),
    tickMs: int(env, 'INLAID_SCHED_TICK_MS', 50, 1),
    trainRecords: int(env, 'INLAID_PREDICTOR_TRAIN_RECORDS', 5000, 0),
    costModelPath: raw(env, 'INLAID_COST_MODEL', '') || null,
  });
}
