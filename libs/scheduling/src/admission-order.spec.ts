/**
 * Admission reads the other tasks' heads from the persistent head index (other-heads.ts) instead of heap-sorting every
 * task's head each round. These random worlds (many tasks, tied keys and arrivals, stale entries from admissions,
 * cancellations, preemptions and triage re-keys, KV and prefill caps, a step budget, placement filters) run the real
 * Admission and the from-scratch oracle (admission-reference.spec.ts) side by side and require the same decisions in
 * every round, for every policy.
 */
import { Admission, AdmissionDeps } from './admission';
import { ReferenceAdmission } from './admission-reference.spec';
import { BatchGate } from './batch-gate';
import { resolveConfig, SchedulerConfigInput } from './config';
import { createPolicy } from './policies/factory';
import { Prediction } from './predictor/types';
import { seededRandom, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { Decision, StepCost } from './types';
import { WaitingQueues } from './waiting-queues';
import { WorkerSlot } from './worker-slot';

type Admitter = Pick<Admission, 'admit'>;
const SLO = { ttftS: 0.6, tpotS: 0.05 };
const COST: StepCost = { baseS: 0.005, decodeRowS: 0.0008, adapterS: 0.002, kvTokenS: 2e-7, prefillTokenS: 1e-5 };
const flat = (v: number): Prediction => ({ p50: v, lo: v, hi: v, points: [{ q: 0, value: v }, { q: 1, value: v }], support: 0 });

/** Runs `rounds` admission rounds of one random world; returns each round's decisions. Deterministic in `seed`. */
function runWorld(seed: number, cfg: SchedulerConfigInput, withCost: boolean, fixedPrefill: boolean, make: (d: AdmissionDeps, tasks: () => string[]) => Admitter, rounds = 120): string[][] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const policy = createPolicy(resolveConfig(cfg));
  const waiting = new WaitingQueues();
  const batching = new BatchGate(policy.batchedAdmission);
  const stepCost = withCost ? { ...COST, ...(fixedPrefill ? { prefillStepS: 0.01 } : {}) } : undefined;
  const slot = new WorkerSlot(worker({ kvBlocksTotal: pick([60, 200, 2000]), maxBatchRows: pick([4, 12, 40]), maxPrefillTokens: pick([600, 4096]), ...(stepCost ? { stepCost } : {}) }));
  const nTasks = pick([2, 5, 20, 60]);
  const tasks: string[] = [];
  const all: TrackedRequest[] = [];
  const target = new Map<TrackedRequest, number>();
  const deps: AdmissionDeps = {
    policy,
    waiting,
    batching,
    starving: (r, now) => now - r.spec.arrivalS > 3,
    dropExceedsKv: (r, out: Decision[]) => {
      if (r.phase === 'waiting') waiting.noteRemoved();
      r.phase = 'aborted';
      out.push({ kind: 'abort', requestId: r.spec.id, reason: 'exceeds-kv' });
    },
  };
  const adm = make(deps, () => tasks);
  const log: string[][] = [];
  let now = 0;
  for (let round = 0; round < rounds; round++) {
    now += pick([0.02, 0.05, 0.1]);
    const stamp = now; // arrivals share this time (ties across tasks), or a few fixed earlier ones
    for (let n = Math.floor(rnd() * 6); n > 0; n--) {
      const task = `t${Math.floor(rnd() ** 2 * nTasks)}`;
      if (!tasks.includes(task)) tasks.push(task);
      const spec = { id: `r${all.length}`, task, promptTokens: pick([8, 40, 300, 900, 40000]), arrivalS: pick([stamp, stamp, stamp - 0.02, 0]) };
      const r = newTracked(spec, SLO, flat(pick([4, 16, 64])), all.length);
      all.push(r);
      target.set(r, pick([1, 3, 12]));
      policy.onArrive(r);
      batching.onArrive(r);
      waiting.push(r, policy.waitingKey(r));
    }
    for (const r of [...slot.running.values()]) {
      r.firstTokenS ??= now;
      r.generated += 1;
      policy.onToken(r);
      if (r.generated >= (target.get(r) ?? 1)) {
        slot.remove(r);
        r.phase = 'finished';
      }
    }
    const running = [...slot.running.values()];
    if (running.length > 0 && rnd() < 0.15) {
      const v = pick(running);
      slot.remove(v);
      v.preemptions += 1;
      waiting.push(v, policy.waitingKey(v));
    }
    const queued = all.filter((r) => r.phase === 'waiting');
    if (queued.length > 0 && rnd() < 0.2) {
      pick(queued).phase = 'aborted';
      waiting.noteRemoved();
    }
    if (policy.triage) {
      for (const r of queued) {
        if (r.phase === 'waiting' && !r.hopeless && r.firstTokenS === undefined && now - r.spec.arrivalS > SLO.ttftS) {
          r.hopeless = true;
          waiting.rekey(r, policy.waitingKey(r));
        }
      }
    }
    const half = rnd() < 0.2;
    const out: Decision[] = [];
    adm.admit(slot, now, half ? (t) => t.length % 2 === 0 : () => true, rnd() < 0.5, out);
    let prefill = 0;
    for (const d of out) if (d.kind === 'admit') prefill += d.prefillTokens;
    slot.prefill.record(now, prefill * 1e-5);
    if (prefill > 0) slot.lastPrefillS = now;
    log.push(out.map((d) => (d.kind === 'admit' ? d.requestId : `${d.kind}:${d.requestId}`)));
  }
  return log;
}

const CASES: [string, SchedulerConfigInput, boolean, boolean][] = [
  ['inlaid, beta 3, step budget', { policy: 'inlaid', inlaid: { beta: 3 } }, true, false],
  ['inlaid, beta 3, step budget, batched admission', { policy: 'inlaid', inlaid: { beta: 3 } }, true, true],
  ['inlaid, beta 10, no step cost', { policy: 'inlaid' }, false, false],
  ['inlaid, fillMaxTasks 4, strict starvation', { policy: 'inlaid', inlaid: { beta: 2, fillMaxTasks: 4, lenientStarvation: false } }, true, false],
  ['inlaid, no grouping, no triage', { policy: 'inlaid', inlaid: { grouping: false, triage: false } }, true, false],
  ['inlaid, not work-conserving, srtf off', { policy: 'inlaid', inlaid: { beta: 2, workConserving: false, srtf: false } }, false, false],
  ['fifo', { policy: 'fifo' }, false, false],
  ['fcfs-maxloras 2', { policy: 'fcfs-maxloras', maxLoras: 2 }, false, false],
  ['mlfq', { policy: 'mlfq' }, false, false],
];

describe('Admission with the head index = the from-scratch heap (random worlds)', () => {
  it.each(CASES)('%s: the same decisions in every round', (_label, cfg, withCost, fixedPrefill) => {
    let admitted = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const real = runWorld(seed, cfg, withCost, fixedPrefill, (d) => new Admission(d));
      const reference = runWorld(seed, cfg, withCost, fixedPrefill, (d, tasks) => new ReferenceAdmission(d, tasks));
      expect(real).toEqual(reference);
      admitted += real.flat().length;
    }
    expect(admitted).toBeGreaterThan(100); // the worlds do admit
  });
});
