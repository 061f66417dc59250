import { buildOnboardFlow, onboardSteps, stepJobId } from './flow';
import { ONBOARD_QUEUE, REQUANTIZE_QUEUE } from './queues';

function chain(flow: ReturnType<typeof buildOnboardFlow>): string[] {
  const names: string[] = [];
  for (let node: typeof flow | undefined = flow; node !== undefined; node = node.children?.[0]) names.push(node.name);
  return names;
}

describe('onboarding flow', () => {
  it('nests the steps so the first step is the deepest child and activate is the parent', () => {
    const flow = buildOnboardFlow('j1', 'sql', onboardSteps(false));
    expect(chain(flow)).toEqual(['activate', 'requantize', 'load', 'validate']);
    expect(flow.queueName).toBe(ONBOARD_QUEUE);
    expect(flow.children?.[0]?.queueName).toBe(REQUANTIZE_QUEUE);
    expect(flow.children?.[0]?.opts?.failParentOnFailure).toBe(true);
    expect(flow.opts?.jobId).toBe(stepJobId('j1', 'activate'));
  });

  it('skips the early load when the task waits for quantization', () => {
    expect(chain(buildOnboardFlow('j2', 'sql', onboardSteps(true)))).toEqual(['activate', 'requantize', 'validate']);
  });

  it('refuses an empty flow', () => {
    expect(() => buildOnboardFlow('j3', 'sql', [])).toThrow('at least one step');
  });
});
