/**
 * The onboarding flow as one BullMQ parent job with nested children. BullMQ runs children before their
 * parent, so nesting makes the steps sequential: validate -> load -> requantize -> activate (the root).
 * `failParentOnFailure` makes a failed step fail every step above it; job ids are derived from the task
 * job id, so adding the same flow twice is a no-op (idempotent enqueue).
 */
import type { FlowJob, JobsOptions } from 'bullmq';
import { OnboardStep, queueOf, StepPayload } from './queues';

export interface FlowOptions {
  /** Transient failures (worker unavailable, another re-quantization running) are retried this often. */
  readonly attempts: number;
  readonly backoffMs: number;
}

export const DEFAULT_FLOW_OPTIONS: FlowOptions = { attempts: 30, backoffMs: 1000 };

export function stepJobId(taskJobId: string, step: OnboardStep): string {
  return `${taskJobId}.${step}`;
}

/** The steps of one task's onboarding, first to last (load is skipped when waiting for quantization). */
export function onboardSteps(waitForQuantization: boolean): OnboardStep[] {
  return waitForQuantization ? ['validate', 'requantize', 'activate'] : ['validate', 'load', 'requantize', 'activate'];
}

export function buildOnboardFlow(taskJobId: string, task: string, steps: readonly OnboardStep[], opts: FlowOptions = DEFAULT_FLOW_OPTIONS): FlowJob {
  if (steps.length === 0) throw new Error('an onboarding flow needs at least one step');
  const jobOpts = (step: OnboardStep): JobsOptions => ({
    jobId: stepJobId(taskJobId, step),
    attempts: opts.attempts,
    backoff: { type: 'fixed', delay: opts.backoffMs },
    failParentOnFailure: true,
    removeOnComplete: { age: 24 * 3600 },
    removeOnFail: { age: 7 * 24 * 3600 },
  });
  let node: FlowJob | undefined;
  for (const step of steps) {
    const data: StepPayload = { taskJobId, task, step };
    node = { name: step, queueName: queueOf(step), data, opts: jobOpts(step), ...(node === undefined ? {} : { children: [node] }) };
  }
  return node as FlowJob;
}
