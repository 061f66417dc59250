import type { OnboardStep } from '@inlaid/jobs';
import { flowState, StepJobLookup } from './onboard-recovery';

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
