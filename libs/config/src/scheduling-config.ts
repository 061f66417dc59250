/**
 * Settings of the gateway's request scheduler (@inlaid/scheduling): policy, grouping, length predictor,
 * default per-task SLOs and the capacity the gateway assumes for each worker. Pure: takes the env as an
 * argument and names the bad variable. The name lists mirror @inlaid/scheduling (a gateway spec checks it).
 */
export const SCHEDULING_POLICIES = ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq'] as const;
export const LENGTH_PREDICTORS = ['quantile', 'mean', 'none', 'prompt'] as const;
export const COST_FIT_MODES = ['off', 'measure', 'online'] as const;
/** The step-cost terms (@inlaid/scheduling COST_TERM_NAMES). */
export const COST_FIT_TERMS = ['base_s', 'prefill_token_s', 'decode_row_s', 'adapter_s', 'kv_token_s', 'prefill_step_s'] as const;

export type SchedulingPolicy = (typeof SCHEDULING_POLICIES)[number];
export type LengthPredictorName = (typeof LENGTH_PREDICTORS)[number];
/** INLAID_BUDGET_FIXED_PREFILL's values, as @inlaid/scheduling's `inlaid.budgetFixedPrefill` takes them. */
export type BudgetFixedPrefill = boolean | 'auto';

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
   * INLAID_BATCH_BUDGET_ROOM (default true): the batch gate's hold and group rules also need the SLO step budget to
   * take the running batch plus the waiting saveable arrivals as one decode step (batch-gate.ts `budgetRoom`;
   * bench/results/sim-evidence-2026-11-30-s9b-seeds.md).
   */
  readonly batchBudgetRoom: boolean;
  /**
   * INLAID_BUDGET_FIXED_PREFILL (default auto): whether `inlaid`'s step budget counts a prefill step's fixed cost
   * in its prefill share: `on`, `off`, or `auto` = per worker, when that cost is at most 0.4 x the tightest TPOT
   * SLO of the rows it stretches (@inlaid/scheduling's default; bench/results/sim-evidence-2026-11-30-s8-notes.md,
   * session 8b). `true` and `false` are accepted as aliases of `on` and `off` (case-insensitive).
   */
  readonly budgetFixedPrefill: BudgetFixedPrefill;
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
  /**
   * INLAID_COST_FIT (default off): `measure` times the steps the gateway serves and fits the step cost online
   * (exported at GET /dashboard/api/cost-model); `online` also plans with that fit once it has
   * INLAID_COST_FIT_MIN_STEPS steps (INLAID_COST_MODEL, if set, until then). INLAID_COST_FIT_WINDOW: steps in
   * the fit's window (default 2000). INLAID_COST_FIT_EXPORT: a file the fit is written to every 10 s.
   * INLAID_COST_FIT_TERMS: comma list of the terms fitted (default all six; the others are 0).
   * INLAID_COST_FIT_PLAN_QUANTILE (optional, in (0, 1]): with `online`, plan with the fit scaled by this
   * quantile of served / predicted step time (an upper bound for that share of steps); unset = the mean fit.
   */
  readonly costFit: (typeof COST_FIT_MODES)[number];
  readonly costFitWindow: number;
  readonly costFitMinSteps: number;
  readonly costFitExport: string | null;
  readonly costFitTerms: readonly (typeof COST_FIT_TERMS)[number][];
  readonly costFitPlanQuantile: number | null;
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

/**
 * An SLO target's bounds in milliseconds (the defaults here, a task's `slo`, the database's CHECKs): from a microsecond (a
 * smaller one is 0 s, or subnormal, once the scheduler divides by 1000) to about 11.6 days (a larger one is no target).
 */
export const SLO_MS_MIN = 0.001;
export const SLO_MS_MAX = 1e9;

function sloMs(env: Env, name: string, fallback: number): number {
  const v = raw(env, name, String(fallback));
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n >= SLO_MS_MIN && n <= SLO_MS_MAX)) {
    throw new SchedulingConfigError(name, `expected milliseconds from ${SLO_MS_MIN} to ${SLO_MS_MAX}, got "${v}"`);
  }
  return n;
}

function termList(env: Env): (typeof COST_FIT_TERMS)[number][] {
  const v = raw(env, 'INLAID_COST_FIT_TERMS', COST_FIT_TERMS.join(','));
  const names = [...new Set(v.split(',').map((t) => t.trim()).filter((t) => t !== ''))];
  const bad = names.filter((t) => !(COST_FIT_TERMS as readonly string[]).includes(t));
  if (names.length === 0 || bad.length > 0) throw new SchedulingConfigError('INLAID_COST_FIT_TERMS', `expected a comma list of ${COST_FIT_TERMS.join(', ')}, got "${v}"`);
  return names as (typeof COST_FIT_TERMS)[number][];
}

function fraction(env: Env, name: string): number | null {
  const v = raw(env, name, '');
  if (v === '') return null;
  const n = Number(v);
  if (!/^\d*\.?\d+$/.test(v) || !(n > 0 && n <= 1)) throw new SchedulingConfigError(name, `expected a number in (0, 1], got "${v}"`);
  return n;
}

function bool(env: Env, name: string, fallback = false): boolean {
  const v = raw(env, name, String(fallback)).toLowerCase();
  if (v !== 'true' && v !== 'false') throw new SchedulingConfigError(name, `expected true or false, got "${v}"`);
  return v === 'true';
}

/** on | off | auto, with true / false as aliases of on / off (case-insensitive); unset or empty = auto. */
function onOffAuto(env: Env, name: string): BudgetFixedPrefill {
  const v = raw(env, name, 'auto').toLowerCase();
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  if (v === 'auto') return 'auto';
  throw new SchedulingConfigError(name, `expected on, off or auto (or true / false), got "${v}"`);
}

export function parseSchedulingConfig(env: Env): SchedulingConfig {
  const window = int(env, 'INLAID_COST_FIT_WINDOW', 2000, 20);
  if (int(env, 'INLAID_COST_FIT_MIN_STEPS', 200, 10) > window) throw new SchedulingConfigError('INLAID_COST_FIT_MIN_STEPS', `must not exceed INLAID_COST_FIT_WINDOW (${window})`);
  return Object.freeze({
    policy: oneOf(env, 'INLAID_POLICY', SCHEDULING_POLICIES, 'inlaid'),
    beta: int(env, 'INLAID_BETA', 10, 1),
    predictor: oneOf(env, 'INLAID_PREDICTOR', LENGTH_PREDICTORS, 'quantile'),
    sloTtftMs: sloMs(env, 'INLAID_SLO_TTFT_MS', 5000),
    sloTpotMs: sloMs(env, 'INLAID_SLO_TPOT_MS', 200),
    maxLoras: int(env, 'INLAID_MAX_LORAS', 4, 1),
    abortHopeless: bool(env, 'INLAID_ABORT_HOPELESS'),
    triage: bool(env, 'INLAID_TRIAGE', true),
    batchNeedRoom: bool(env, 'INLAID_BATCH_NEED_ROOM', true),
    batchBudgetRoom: bool(env, 'INLAID_BATCH_BUDGET_ROOM', true),
    budgetFixedPrefill: onOffAuto(env, 'INLAID_BUDGET_FIXED_PREFILL'),
    workerRows: int(env, 'INLAID_SCHED_MAX_ROWS', 72, 1),
    workerPrefillTokens: int(env, 'INLAID_SCHED_MAX_PREFILL_TOKENS', 2048, 1),
    tickMs: int(env, 'INLAID_SCHED_TICK_MS', 50, 1),
    trainRecords: int(env, 'INLAID_PREDICTOR_TRAIN_RECORDS', 5000, 0),
    costModelPath: raw(env, 'INLAID_COST_MODEL', '') || null,
    costFit: oneOf(env, 'INLAID_COST_FIT', COST_FIT_MODES, 'off'),
    costFitWindow: window,
    costFitMinSteps: int(env, 'INLAID_COST_FIT_MIN_STEPS', 200, 10),
    costFitExport: raw(env, 'INLAID_COST_FIT_EXPORT', '') || null,
    costFitTerms: termList(env),
    costFitPlanQuantile: fraction(env, 'INLAID_COST_FIT_PLAN_QUANTILE'),
  });
}
