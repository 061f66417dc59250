/**
 * What a gateway that died mid-onboarding can leave behind, seen from the task_jobs row and the BullMQ flow
 * (pure, given a lookup of step jobs). A step job whose lock ran out is resumed by BullMQ itself (stalled
 * jobs go back to wait; the steps are idempotent). Two states are not:
 * - `missing`: the row was written but its flow never reached Redis (died between the two, tasks.service.ts
 *   create()): enqueue it (its job ids derive from the row id, so a second enqueue is a no-op);
 * - `failed`: BullMQ failed a step without running it (it stalled more than maxStalledCount times) or the
 *   gateway died before writing a failure down: mark the task failed with BullMQ's reason.
 * A failed step may only be the echo of an earlier one: BullMQ fails a parent step ("child <key> failed",
 * failParentOnFailure) after its child failed, and a gateway may see the parent's failure first (another of
 * its queue worker slots fails the parent while the child's 'failed' listener is still on its way to the
 * task's lock). `rootFailure` names the step that failed first, so the task records the cause either way.
 */
import type { TaskJob } from '@inlaid/db';
import { onboardSteps, OnboardStep } from '@inlaid/jobs';

/** The state and failure reason of one step job, or null when Redis does not hold it. */
export type StepJobLookup = (step: OnboardStep, taskJobId: string) => Promise<{ state: string; failedReason: string } | null>;

export type FlowState = { kind: 'live' } | { kind: 'missing' } | { kind: 'failed'; step: OnboardStep; reason: string };

/** The statuses of an onboarding that has not ended (the flow still has steps to run). */
export const UNFINISHED = ['queued', 'validating', 'loading', 'quantizing', 'activating'] as const;

export type StepFailure = { step: OnboardStep; reason: string };

/**
 * The failure an onboarding's task job records when `failed` is reported: the first step before it (in flow
 * order) whose job failed, with that job's reason, else `failed` itself. A step runs only after every step
 * before it completed, so a failed earlier step is what made this one fail.
 */
export async function rootFailure(job: Pick<TaskJob, 'id' | 'waitForQuantization'>, failed: StepFailure, lookup: StepJobLookup): Promise<StepFailure> {
  for (const step of onboardSteps(job.waitForQuantization)) {
    if (step === failed.step) break;
    const s = await lookup(step, job.id);
    if (s?.state === 'failed') return { step, reason: s.failedReason };
  }
  return failed;
}

export async function flowState(job: Pick<TaskJob, 'id' | 'waitForQuantization'>, lookup: StepJobLookup): Promise<FlowState> {
  const steps = onboardSteps(job.waitForQuantization);
  const root = await lookup('activate', job.id);
  if (root === null) return { kind: 'missing' };
  if (root.state !== 'failed') return { kind: 'live' };
  for (const step of steps) {
    const s = step === 'activate' ? root : await lookup(step, job.id);
    if (s?.state === 'failed') return { kind: 'failed', step, reason: s.failedReason };
  }
  return { kind: 'failed', step: 'activate', reason: root.failedReason };
}
