import type { OnboardStep } from '@inlaid/jobs';
import { flowState, rootFailure, StepJobLookup } from './onboard-recovery';

/** A lookup over step jobs given as step -> [state, failedReason]; absent steps are not in Redis. */
function jobs(held: Partial<Record<OnboardStep, [string, string?]>>): StepJobLookup {
  return async (step) => {
    const j = held[step];
    return j === undefined ? null : { state: j[0], failedReason: j[1] ?? '' };
  };
}

describe('flowState (what a dead gateway left of an onboarding flow)', () => {
  const job = { id: 'j1', waitForQuantization: false };

  it('is missing when the root step job is not in Redis (the row was written, the flow never enqueued)', async () => {
    expect(await flowState(job, jobs({}))).toEqual({ kind: 'missing' });
  });

  it('is live while the root waits for its children or runs, and once it completed', async () => {
    for (const state of ['waiting-children', 'waiting', 'active', 'delayed', 'completed']) {
      expect(await flowState(job, jobs({ activate: [state], validate: ['failed', 'retrying'] }))).toEqual({ kind: 'live' });
    }
  });

  it('names the first failed step and its reason when the flow failed', async () => {
    const held = jobs({ activate: ['failed', 'child failed'], requantize: ['failed', 'child failed'], load: ['failed', 'job stalled more than allowable limit'], validate: ['completed'] });
    expect(await flowState(job, held)).toEqual({ kind: 'failed', step: 'load', reason: 'job stalled more than allowable limit' });
  });

  it('skips the load step of a task waiting for quantization, and falls back on the root when no step job is left', async () => {
    const wait = { id: 'j2', waitForQuantization: true };
    expect(await flowState(wait, jobs({ activate: ['failed', 'x'], load: ['failed', 'not its step'], requantize: ['failed', 'busy'] }))).toEqual({ kind: 'failed', step: 'requantize', reason: 'busy' });
    expect(await flowState(wait, jobs({ activate: ['failed', 'root reason'] }))).toEqual({ kind: 'failed', step: 'activate', reason: 'root reason' });
  });
});

describe('rootFailure (which failure a task records when BullMQ fails a step)', () => {
  const job = { id: 'j1', waitForQuantization: false };
  const stalled = 'job stalled more than allowable limit';

  it('names the earlier step whose failure failed this parent step, whichever failure is reported first', async () => {
    const held = jobs({ validate: ['failed', stalled], load: ['failed', 'child e2e:inlaid-onboard:j1.validate failed'], activate: ['waiting-children'] });
    expect(await rootFailure(job, { step: 'load', reason: 'child e2e:inlaid-onboard:j1.validate failed' }, held)).toEqual({ step: 'validate', reason: stalled });
    expect(await rootFailure(job, { step: 'activate', reason: 'child e2e:inlaid-requantize:j1.requantize failed' }, held)).toEqual({ step: 'validate', reason: stalled });
    expect(await rootFailure(job, { step: 'validate', reason: stalled }, held)).toEqual({ step: 'validate', reason: stalled });
  });

  it('keeps the reported failure when no earlier step failed (or its job is gone), and looks only at earlier steps', async () => {
    const held = jobs({ validate: ['completed'], load: ['failed', stalled], requantize: ['failed', 'later'] });
    expect(await rootFailure(job, { step: 'load', reason: stalled }, held)).toEqual({ step: 'load', reason: stalled });
    expect(await rootFailure(job, { step: 'load', reason: stalled }, jobs({}))).toEqual({ step: 'load', reason: stalled });
    const wait = { id: 'j2', waitForQuantization: true };
    expect(await rootFailure(wait, { step: 'activate', reason: 'child x failed' }, jobs({ load: ['failed', 'not its step'], requantize: ['failed', 'busy'] }))).toEqual({ step: 'requantize', reason: 'busy' });
  });
});
