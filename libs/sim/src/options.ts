/** Turns CLI flags into simulation options (validation only; file reading stays in cli.ts). */
import { BatchedAdmissionMode, BatchedAdmissionOptions, PolicyName, PredictorName, SchedulerConfigInput } from '@inlaid/scheduling';
import { Flags, numberFlag } from '@inlaid/workload';

export const SIM_FLAGS = [
  'trace', 'policy', 'workers', 'kv-blocks', 'cost-model', 'json', 'beta', 'max-loras', 'predictor',
  'grouping', 'work-conserving', 'fill-max-tasks', 'srtf', 'memory-aware', 'slo-ttft', 'slo-tpot', 'abort-hopeless', 'drain-s', 'starvation-s', 'step-cost-hint',
  'step-budget', 'budget-safety', 'lost-slack', 'lost-reserve-quantile', 'lenient-starvation', 'reserve-quantile', 'triage', 'budget-fixed-prefill', 'budget-fixed-prefill-max-tpot',
  'batched-admission', 'batch-hold-fraction', 'batch-group', 'batch-fixed-share', 'batch-need-room', 'batch-spacing-steps', 'batch-budget-room',
  'max-model-len', 'requests-out',
] as const;

export function boolFlag(flags: Flags, name: string, fallback: boolean): boolean {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  if (['on', 'true', '1', 'yes'].includes(v)) return true;
  if (['off', 'false', '0', 'no'].includes(v)) return false;
  throw new Error(`--${name} must be on or off, got "${v}"`);
}

export function schedulerConfigFromFlags(flags: Flags): SchedulerConfigInput {
  const ttft = flags.get('slo-ttft');
  const tpot = flags.get('slo-tpot');
  if ((ttft === undefined) !== (tpot === undefined)) throw new Error('give both --slo-ttft and --slo-tpot, or neither');
  return {
    policy: (flags.get('policy') ?? 'inlaid') as PolicyName,
    predictor: (flags.get('predictor') ?? 'quantile') as PredictorName,
    maxLoras: numberFlag(flags, 'max-loras', 4),
    starvationS: numberFlag(flags, 'starvation-s', 60),
    abortHopeless: boolFlag(flags, 'abort-hopeless', false),
    inlaid: {
      ...(flags.has('beta') ? { beta: numberFlag(flags, 'beta') } : {}),
      grouping: boolFlag(flags, 'grouping', true),
      workConserving: boolFlag(flags, 'work-conserving', true),
      ...(flags.has('fill-max-tasks') ? { fillMaxTasks: numberFlag(flags, 'fill-max-tasks') } : {}),
      srtf: boolFlag(flags, 'srtf', true),
      memoryAware: boolFlag(flags, 'memory-aware', true),
      stepBudget: boolFlag(flags, 'step-budget', true),
      lenientStarvation: boolFlag(flags, 'lenient-starvation', true),
      ...(flags.has('triage') ? { triage: boolFlag(flags, 'triage', true) } : {}),
      ...(flags.has('budget-fixed-prefill') ? { budgetFixedPrefill: flags.get('budget-fixed-prefill') === 'auto' ? ('auto' as const) : boolFlag(flags, 'budget-fixed-prefill', false) } : {}),
      ...(flags.has('budget-fixed-prefill-max-tpot') ? { budgetFixedPrefillMaxTpot: numberFlag(flags, 'budget-fixed-prefill-max-tpot') } : {}),
      ...(flags.has('reserve-quantile') ? { reserveQuantile: numberFlag(flags, 'reserve-quantile') } : {}),
      ...(flags.has('budget-safety') ? { budgetSafety: numberFlag(flags, 'budget-safety') } : {}),
      ...(flags.has('lost-slack') ? { lostSlack: boolFlag(flags, 'lost-slack', false) } : {}),
      ...(flags.has('lost-reserve-quantile') ? { lostReserveQuantile: lostReserveFlag(flags.get('lost-reserve-quantile')) } : {}),
      batchedAdmission: batchedAdmissionFromFlags(flags),
    },
    ...(ttft !== undefined ? { defaultSlo: { ttftS: numberFlag(flags, 'slo-ttft'), tpotS: numberFlag(flags, 'slo-tpot') } } : {}),
  };
}

/** --lost-reserve-quantile Q (0..1) or off (null: a lost row reserves no KV for its output). */
function lostReserveFlag(v: string | undefined): number | null {
  if (v === 'off') return null;
  const q = Number(v);
  if (v === undefined || v.trim() === '' || !(q >= 0 && q <= 1)) throw new Error(`--lost-reserve-quantile must be off or in [0, 1], got "${v}"`);
  return q;
}

/** --batched-admission auto|on|off and its tuning flags (unset ones keep the library defaults). */
function batchedAdmissionFromFlags(flags: Flags): Partial<BatchedAdmissionOptions> {
  const mode = flags.get('batched-admission');
  if (mode !== undefined && !['auto', 'on', 'off'].includes(mode)) throw new Error(`--batched-admission must be auto, on or off, got "${mode}"`);
  return {
    ...(mode !== undefined ? { mode: mode as BatchedAdmissionMode } : {}),
    ...(flags.has('batch-hold-fraction') ? { holdFraction: numberFlag(flags, 'batch-hold-fraction') } : {}),
    ...(flags.has('batch-group') ? { groupRequests: numberFlag(flags, 'batch-group') } : {}),
    ...(flags.has('batch-fixed-share') ? { fixedShare: numberFlag(flags, 'batch-fixed-share') } : {}),
    ...(flags.has('batch-spacing-steps') ? { spacingSteps: flags.get('batch-spacing-steps') === 'off' ? null : numberFlag(flags, 'batch-spacing-steps') } : {}),
    ...(flags.has('batch-need-room') ? { needRoom: boolFlag(flags, 'batch-need-room', true) } : {}),
    ...(flags.has('batch-budget-room') ? { budgetRoom: boolFlag(flags, 'batch-budget-room', true) } : {}),
  };
}
