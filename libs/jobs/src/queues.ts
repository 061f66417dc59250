/**
 * Queue names and typed payloads of the task onboarding pipeline. Every step job carries only ids; the
 * state (adapter path, calibration file, progress, errors) lives in Postgres (`task_jobs`), so a step can be
 * re-run after a restart and picks up where the database says it stopped.
 */

/** validate, load, activate: cheap steps, several tasks at once. */
export const ONBOARD_QUEUE = 'inlaid-onboard';
/** requantize: one at a time, so tasks that arrive meanwhile are batched into the next run. */
export const REQUANTIZE_QUEUE = 'inlaid-requantize';

export const ONBOARD_STEPS = ['validate', 'load', 'requantize', 'activate'] as const;
export type OnboardStep = (typeof ONBOARD_STEPS)[number];

export interface StepPayload {
  /** The task_jobs row this step works on. */
  readonly taskJobId: string;
  readonly task: string;
  readonly step: OnboardStep;
}

/** What a step job stores with job.updateData while it runs (mirrored in task_jobs.progress). */
export interface StepProgressData extends StepPayload {
  readonly layersDone?: number;
  readonly numLayers?: number;
  readonly checkpointVersion?: number;
}

export function queueOf(step: OnboardStep): string {
  return step === 'requantize' ? REQUANTIZE_QUEUE : ONBOARD_QUEUE;
}
