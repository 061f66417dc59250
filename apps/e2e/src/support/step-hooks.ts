/**
 * Test seams in a running gateway, through its Nest container: hold one call of the WorkerAdminService (the
 * real worker call runs once the test releases it), and record what each onboarding step of a task job
 * returned. Nothing is faked: the held call is the real one, later.
 */
import type { INestApplicationContext } from '@nestjs/common';
import { OnboardSteps } from '../../../gateway/src/tasks/onboard-steps';
import { WorkerAdminService } from '../../../gateway/src/tasks/worker-admin.service';
import { waitFor } from './gateway-harness';

type AdminCall = 'validate' | 'loadEverywhere';

export interface HeldCall {
  /** Resolves when the held call starts (before it reaches the worker). */
  readonly entered: Promise<void>;
  /** Lets the held call go on to the worker. */
  release(): void;
}

/**
 * Holds the `skip`+1-th call of `method` for `task` until released; other calls pass through. The hook
 * removes itself once it has held its call.
 */
export function holdAdminCall(app: INestApplicationContext, method: AdminCall, task: string, skip = 0): HeldCall {
  const admin = app.get(WorkerAdminService);
  const original = admin[method] as (...args: unknown[]) => Promise<unknown>;
  let entered!: () => void;
  let release!: () => void;
  const enteredP = new Promise<void>((r) => (entered = r));
  const released = new Promise<void>((r) => (release = r));
  let seen = 0;
  const hook = async (...args: unknown[]): Promise<unknown> => {
    if (args[0] !== task || seen++ < skip) return original.apply(admin, args);
    delete (admin as unknown as Record<string, unknown>)[method]; // back to the prototype's method
    entered();
    await released;
    return original.apply(admin, args);
  };
  (admin as unknown as Record<string, unknown>)[method] = hook;
  return { entered: enteredP, release };
}

export interface StepLog {
  /** What `step` of task job `jobId` returned (or `threw: <message>`), once it has run. */
  outcome(jobId: string, step: string, timeoutMs?: number): Promise<string>;
}

/** Records the outcome of every onboarding step the gateway runs from now on. */
export function watchSteps(app: INestApplicationContext): StepLog {
  const steps = app.get(OnboardSteps);
  const run = steps.run.bind(steps);
  const done = new Map<string, string>();
  steps.run = async (step, id, ctx) => {
    try {
      const out = await run(step, id, ctx);
      done.set(`${id}:${step}`, out);
      return out;
    } catch (err) {
      done.set(`${id}:${step}`, `threw: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    }
  };
  return { outcome: (id, step, timeoutMs = 30_000) => waitFor(async () => done.get(`${id}:${step}`), timeoutMs, `step ${step} of ${id}`) };
}
