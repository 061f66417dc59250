import { DeltaRow, ServedStep, ServedSteps } from './cost-steps';

interface Req {
  id: string;
  task: string;
  prompt: number;
  out: number;
  done: number;
}

/**
 * A fake worker: runs steps back to back (each step's time known), every running request gets one token per
 * step, and each step's deltas reach the gateway in a burst (jittered, in shuffled order) at the step's end.
 */
function serve(steps: ServedSteps, plan: { admitAt: number; req: Req }[], stepTime: (rows: Req[], prefill: number) => number): { truth: number[]; got: ServedStep[] } {
  const truth: number[] = [];
  const got: ServedStep[] = [];
  const running: Req[] = [];
  let t = 0;
  let next = 0;
  while (next < plan.length || running.length > 0) {
    if (running.length === 0 && plan[next].admitAt > t) t = plan[next].admitAt; // idle
    const fresh: Req[] = [];
    while (next < plan.length && plan[next].admitAt <= t) {
      steps.admitted(plan[next].req.id, plan[next].admitAt);
      fresh.push(plan[next++].req);
    }
    running.push(...fresh);
    const prefill = fresh.reduce((s, r) => s + r.prompt, 0);
    const dt = stepTime(running, prefill);
    t += dt;
    truth.push(dt);
    const order = [...running].sort((a, b) => ((a.id.charCodeAt(1) * 7 + t * 1e4) % 5) - ((b.id.charCodeAt(1) * 7 + t * 1e4) % 5));
    order.forEach((r, i) => {
      r.done += 1;
      const row: DeltaRow = { id: r.id, task: r.task, promptTokens: r.prompt, completionTokens: r.done, tokens: 1, finished: r.done >= r.out };
      const s = steps.delta(t + 0.0005 + i * 1e-5, row);
      if (s !== undefined) got.push(s);
    });
    for (let i = running.length - 1; i >= 0; i--) if (running[i].done >= running[i].out) running.splice(i, 1);
  }
  return { truth, got };
}

const req = (id: string, task: string, prompt: number, out: number): Req => ({ id, task, prompt, out, done: 0 });

describe('ServedSteps', () => {
  it('recovers every busy step: wall time, prefill tokens, decode rows, tasks and KV', () => {
    const plan = [
      { admitAt: 0, req: req('a', 't0', 10, 5) },
      { admitAt: 0, req: req('b', 't1', 20, 3) },
      { admitAt: 0.015, req: req('c', 't1', 30, 4) }, // arrives while steps run: joins a later step
    ];
    const tracker = new ServedSteps();
    const { truth, got } = serve(tracker, plan, (rows, prefill) => 0.01 + 0.001 * rows.length + 1e-4 * prefill);
    // the first step has no known start (the worker was idle before it); the last is still open (it closes
    // when the next step's first delta comes); every other one is measured
    expect(got.map((s) => s.wallS)).toHaveLength(truth.length - 2);
    got.forEach((s, i) => expect(s.wallS).toBeCloseTo(truth[i + 1], 6));
    // step 2 (from t=0.015): a, b decode (KV = prompt + 1 generated each), c (admitted at 0.015) prefills
    expect(got[0]).toMatchObject({ prefillTokens: 30, decodeRows: 2, adapters: 2, kvTokens: 10 + 1 + 20 + 1 + 30 });
    // step 3: three decode rows, KV grown by one token each
    expect(got[1]).toMatchObject({ prefillTokens: 0, decodeRows: 3, adapters: 2, kvTokens: 12 + 22 + 31 });
    expect(tracker.inFlight).toBe(0);
  });

  it('drops the interval after an idle worker and splits a step whose rows all turned over (admitted later)', () => {
    const plan = [
      { admitAt: 0, req: req('a', 't0', 10, 2) },
      { admitAt: 1.0, req: req('b', 't0', 10, 3) }, // the worker idles from ~0.02 to 1.0
    ];
    const tracker = new ServedSteps();
    const { truth, got } = serve(tracker, plan, () => 0.01);
    expect(truth).toHaveLength(5);
    // measured: a's 2nd step and b's 2nd step; not b's prefill (it follows the idle gap); b's 3rd is still open
    expect(got.map((s) => Math.round(s.wallS * 1000))).toEqual([10, 10]);
    expect(got.every((s) => s.prefillTokens === 0)).toBe(true);
  });

  it('an aborted run no longer keeps the worker busy', () => {
    const t = new ServedSteps();
    t.admitted('a', 0);
    t.admitted('b', 0);
    t.delta(0.01, { id: 'a', task: 'x', promptTokens: 5, completionTokens: 1, tokens: 1, finished: false });
    t.delta(0.0101, { id: 'b', task: 'x', promptTokens: 5, completionTokens: 1, tokens: 1, finished: true });
    t.ended('a');
    t.admitted('c', 0.5);
    const s = t.delta(0.52, { id: 'c', task: 'x', promptTokens: 5, completionTokens: 1, tokens: 1, finished: false });
    t.delta(0.53, { id: 'c', task: 'x', promptTokens: 5, completionTokens: 2, tokens: 1, finished: false });
    expect(s).toBeUndefined();
    const s2 = t.delta(0.54, { id: 'c', task: 'x', promptTokens: 5, completionTokens: 3, tokens: 1, finished: true }, 7);
    expect(s2?.wallS).toBeCloseTo(0.01, 9);
    expect(s2).toMatchObject({ decodeRows: 1, prefillTokens: 0, kvTokens: 6 });
    expect(s2?.queued).toBeUndefined(); // the step at 0.53 was opened without a queue length
    t.admitted('d', 0.545);
    expect(t.delta(0.55, { id: 'd', task: 'x', promptTokens: 5, completionTokens: 1, tokens: 1, finished: true })?.queued).toBe(7);
  });

  it('gapS splits a silent turnover that rules (a) and (b) cannot see', () => {
    const rows = (id: string, c: number, fin: boolean): DeltaRow => ({ id, task: 'x', promptTokens: 4, completionTokens: c, tokens: 1, finished: fin });
    for (const [gapS, expected] of [[0.005, 3], [Number.POSITIVE_INFINITY, 1]] as const) {
      const t = new ServedSteps({ gapS });
      t.admitted('a', 0);
      t.admitted('b', 0);
      t.admitted('z', 0);
      const out: ServedStep[] = [];
      const push = (s: ServedStep | undefined): void => void (s && out.push(s));
      push(t.delta(0.01, rows('a', 1, false)));
      push(t.delta(0.02, rows('a', 2, true))); // a done; b (admitted at 0, queued in the worker) prefills next
      push(t.delta(0.03, rows('b', 1, false)));
      push(t.delta(0.04, rows('b', 2, false)));
      push(t.delta(0.05, rows('z', 1, false)));
      expect(out).toHaveLength(expected);
    }
  });
});
