/** Scheduler configuration: defaults and validation (read once at start-up, then passed down). */
import { BatchedAdmissionOptions, validateBatchedAdmission } from './batch-gate';
import { PREDICTOR_NAMES } from './predictor/factory';
import { PredictorName } from './predictor/types';
import { DEFAULT_SLO, validateSlo } from './slo';
import { Slo } from './types';

export type PolicyName = 'inlaid' | 'fifo' | 'fcfs-maxloras' | 'mlfq';
export const POLICY_NAMES: readonly PolicyName[] = ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq'];

export interface InlaidOptions {
  /**
   * Most distinct tasks in one batch (grouping coefficient), default 10. The v7 profile (beta 3, budgetSafety 1,
   * lostReserveQuantile 0.1) meets the no-throughput-loss rule at more simulated points at a lower mean SLO
   * attainment (bench/results/sim-evidence-2026-11-29-v7-seeds.md).
   */
  readonly beta: number;
  /** Beta cap and preference for tasks already in the batch. */
  readonly grouping: boolean;
  /**
   * When grouping leaves rows idle, fill them with the best requests of other tasks (beta then only
   * orders candidates). Off = beta is a hard cap, as in the first version.
   */
  readonly workConserving: boolean;
  /**
   * Hard ceiling on distinct tasks per batch for the fill (>= beta; Infinity = none). Set it from the
   * worker's cost per distinct adapter, e.g. the most adapters whose step time still meets the TPOT SLO.
   */
  readonly fillMaxTasks: number;
  /** Order by predicted remaining output (else by arrival). */
  readonly srtf: boolean;
  /** Reserve KV for the predicted final length at admission (else only the current context). */
  readonly memoryAware: boolean;
  /**
   * Quantile of the remaining-length distribution reserved when memory-aware. Low (0.1 = the length 90% of
   * such requests reach): reserving the median idled the KV that shorter requests never use, and the
   * overflow is handled by preempting the longest-remaining rows (scarce-KV sweeps: sim-evidence-*-h200.md).
   */
  readonly reserveQuantile: number;
  /** Waiting one second is worth this many predicted tokens (continuous aging within SRTF). */
  readonly agingTokensPerS: number;
  /**
   * SLO-aware step budget: every admission (beta group and fill, not the first row of an empty batch nor
   * a starving request) must keep the projected decode step within `budgetSafety` x TPOT SLO x (1 - the
   * worker's recent prefill share), with the candidate's KV at half its predicted output. Needs the
   * worker's `stepCost`. Off = only the fill is bounded, by the plain TPOT with the current KV.
   */
  readonly stepBudget: boolean;
  /**
   * Fraction of the TPOT SLO the projected decode step may use (0 < x <= 1), default 0.95. 1 (the v7 profile) gives
   * the CPU model more throughput and less SLO attainment; above 1 (tried 1.05) SLO attainment collapses.
   */
  readonly budgetSafety: number;
  /**
   * With the step budget: while no request that could still meet its SLO is arriving, a lost candidate (past its
   * TTFT) may use the slack the saveable rows have banked against their TPOT SLO (step-budget.ts), so the lost
   * backlog drains while the last saveable rows finish. Off: it did not help on three seeds (sim-evidence-*-v6-seeds.md).
   */
  readonly lostSlack: boolean;
  /**
   * A starving request goes first wherever it fits (memory projection and step budget included) instead of
   * stopping every admission until it fits. Liveness then rests on continuous aging and this first claim.
   */
  readonly lenientStarvation: boolean;
  /**
   * SLO triage (triage.ts): a waiting request past its TTFT SLO without a first token is ordered after every
   * request that can still meet its SLO (it still runs when there is room; nothing is dropped).
   */
  readonly triage: boolean;
  /**
   * With triage, KV reserved for a lost row's output (quantile of its predicted remaining output, as
   * `reserveQuantile`); null = none (a lost row reserves only its context). Reserving keeps lost work that fills the
   * batch from outgrowing a small KV and being preempted and recomputed (the CPU model's 512 blocks). Default null;
   * 0.1 in the v7 profile.
   */
  readonly lostReserveQuantile: number | null;
  /**
   * With batched admission active, the step budget's prefill share counts the fixed cost of each prefill step
   * too: a request's TPOT is the mean of all steps of its life, prefill steps included, so the decode budget
   * must leave room for the fixed cost the batch gate lets through (up to its fixedShare of the time). true / false,
   * or 'auto' (default since session 8b) = per worker, by `budgetFixedPrefillMaxTpot`.
   */
  readonly budgetFixedPrefill: boolean | 'auto';
  /**
   * For `budgetFixedPrefill: 'auto'` (default since 2026-11-30, session 8b): count the fixed prefill-step cost when it
   * is at most this share of the TPOT SLO (tightest among the rows it stretches). Default 0.4. Measured: counting it
   * met more goal points on the served H200 s8 fit (11.6 ms = 0.23 x 50 ms; 9/15 -> 14/15 full KV) and was neutral on
   * the served CPU fit (7.4 ms = 0.074 x 100 ms), but halved them on the measured H200 model (37 ms = 0.74 x 50 ms:
   * 14/15 -> 7/15). 0.4 is about the geometric midpoint of 0.23 and 0.74, so a refit within the s8 fit's own error
   * (p90 16.5%) cannot flip either model (bench/results/sim-evidence-2026-11-30-s8-notes.md, session 8b).
   */
  readonly budgetFixedPrefillMaxTpot: number;
  /**
   * Batched prefill admission (batch-gate.ts): hold waiting requests while the worker decodes and admit them
   * together, so fewer steps pay a fixed prefill-step cost. Mode 'auto' (default) = on only for workers whose
   * stepCost has prefillStepS > 0.
   */
  readonly batchedAdmission: BatchedAdmissionOptions;
}

export interface MlfqOptions {
  readonly levels: number;
  /** Decode tokens allowed in level 0; level i allows quantum * 2^i. */
  readonly quantumTokens: number;
  /** Prompt tokens counted as one decode token when placing a new request (skip-join). */
  readonly prefillTokensPerUnit: number;
}

export interface SchedulerConfig {
  readonly policy: PolicyName;
  readonly predictor: PredictorName;
  readonly inlaid: InlaidOptions;
  /** vLLM's --max-loras for fcfs-maxloras. */
  readonly maxLoras: number;
  readonly mlfq: MlfqOptions;
  /** A request waiting longer than this (since arrival) goes ahead of everything else. */
  readonly starvationS: number;
  readonly defaultSlo: Slo;
  /** Abort waiting requests whose TTFT SLO has already passed (S-LoRA early abort). */
  readonly abortHopeless: boolean;
}

export type SchedulerConfigInput = Partial<Omit<SchedulerConfig, 'inlaid' | 'mlfq'>> & {
  readonly inlaid?: Partial<Omit<InlaidOptions, 'batchedAdmission'>> & { readonly batchedAdmission?: Partial<BatchedAdmissionOptions> };
  readonly mlfq?: Partial<MlfqOptions>;
};

export const DEFAULT_CONFIG: SchedulerConfig = {
  policy: 'inlaid',
  predictor: 'quantile',
  inlaid: { beta: 10, grouping: true, workConserving: true, fillMaxTasks: Number.POSITIVE_INFINITY, srtf: true, memoryAware: true, reserveQuantile: 0.1, agingTokensPerS: 20, stepBudget: true, budgetSafety: 0.95, lostSlack: false, lenientStarvation: true, triage: true, lostReserveQuantile: null, budgetFixedPrefill: 'auto', budgetFixedPrefillMaxTpot: 0.4,
    batchedAdmission: { mode: 'auto', holdFraction: 0.25, groupRequests: 32, fixedShare: 0.2, needRoom: true, spacingSteps: 8, budgetRoom: true } },
  maxLoras: 4,
  mlfq: { levels: 6, quantumTokens: 8, prefillTokensPerUnit: 128 },
  starvationS: 60,
  defaultSlo: DEFAULT_SLO,
  abortHopeless: false,
};

export function resolveConfig(input: SchedulerConfigInput = {}): SchedulerConfig {
  const cfg: SchedulerConfig = {
    ...DEFAULT_CONFIG,
    ...input,
    inlaid: {
      ...DEFAULT_CONFIG.inlaid,
      ...input.inlaid,
      batchedAdmission: { ...DEFAULT_CONFIG.inlaid.batchedAdmission, ...input.inlaid?.batchedAdmission },
    },
    mlfq: { ...DEFAULT_CONFIG.mlfq, ...input.mlfq },
  };
  if (!POLICY_NAMES.includes(cfg.policy)) {
    throw new Error(`unknown policy "${cfg.policy}"; expected one of ${POLICY_NAMES.join(', ')}`);
  }
  if (!PREDICTOR_NAMES.includes(cfg.predictor)) throw new Error(`unknown predictor "${cfg.predictor}"`);
  positiveInt('inlaid.beta', cfg.inlaid.beta);
  if (!(cfg.inlaid.fillMaxTasks >= 1)) throw new Error(`inlaid.fillMaxTasks must be >= 1, got ${cfg.inlaid.fillMaxTasks}`);
  positiveInt('maxLoras', cfg.maxLoras);
  positiveInt('mlfq.levels', cfg.mlfq.levels);
  positiveInt('mlfq.quantumTokens', cfg.mlfq.quantumTokens);
  if (!(cfg.mlfq.prefillTokensPerUnit > 0)) throw new Error('mlfq.prefillTokensPerUnit must be > 0');
  if (!(cfg.inlaid.reserveQuantile >= 0 && cfg.inlaid.reserveQuantile <= 1)) {
    throw new Error('inlaid.reserveQuantile must be in [0, 1]');
  }
  const lrq = cfg.inlaid.lostReserveQuantile;
  if (lrq !== null && !(lrq >= 0 && lrq <= 1)) throw new Error('inlaid.lostReserveQuantile must be null or in [0, 1]');
  if (!(cfg.inlaid.agingTokensPerS >= 0)) throw new Error('inlaid.agingTokensPerS must be >= 0');
  if (!(cfg.inlaid.budgetSafety > 0 && cfg.inlaid.budgetSafety <= 1)) throw new Error('inlaid.budgetSafety must be in (0, 1]');
  if (![true, false, 'auto'].includes(cfg.inlaid.budgetFixedPrefill)) throw new Error(`inlaid.budgetFixedPrefill must be true, false or 'auto', got ${String(cfg.inlaid.budgetFixedPrefill)}`);
  if (!(cfg.inlaid.budgetFixedPrefillMaxTpot >= 0)) throw new Error('inlaid.budgetFixedPrefillMaxTpot must be >= 0');
  validateBatchedAdmission(cfg.inlaid.batchedAdmission);
  if (!(cfg.starvationS > 0)) throw new Error('starvationS must be > 0');
  validateSlo('default', cfg.defaultSlo);
  return cfg;
}

function positiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
}
