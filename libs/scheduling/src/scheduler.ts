/**
 * The Scheduler: owns per-task waiting queues, each worker's running set and its KV budget, and turns
 * them into per-step decisions with the configured policy. Iteration-level: call `schedule` before
 * every step of a worker; every request in the returned batch runs in that step (new ones prefill).
 * Each plan: early aborts (if asked), SLO triage re-keys (policies with `triage`, triage.ts), preemption when the
 * worker's KV runs short (preemption.ts), then admission (admission.ts). Preemption drops KV (recompute on
 * re-admission), lowest priority first. Anything waiting longer than `starvationS` goes ahead of all else; under a
 * strict policy, if it cannot be admitted yet, admissions pause until it can (so nothing starves); under inlaid it
 * must fit like any other request (see `Policy.starvingPausesAdmission`), and continuous aging keeps it first.
 * This file keeps the bookkeeping: request records, arrivals, tokens, finishes, cancellations and workers.
 */
import { Admission } from './admission';
import { BatchGate } from './batch-gate';
import { resolveConfig, SchedulerConfig, SchedulerConfigInput } from './config';
import { createPolicy } from './policies/factory';
import { Policy } from './policies/policy';
import { PreemptionDeps, relieveMemory } from './preemption';
import { createPredictor } from './predictor/factory';
import { LengthPredictor, Prediction } from './predictor/types';
import { meetsSlo, SloTable, tpotOf } from './slo';
import { newTracked, TrackedRequest } from './tracked';
import { TtftDeadlines } from './triage';
import { Decision, RequestOutcome, RequestSpec, Slo, StepPlan, WorkerState } from './types';
import { WaitingQueues } from './waiting-queues';
import { validateWorkerState, WorkerSlot } from './worker-slot';

export class Scheduler {
  readonly config: SchedulerConfig;
  readonly policy: Policy;
  readonly predictor: LengthPredictor;
  private slos: SloTable;
  private readonly requests = new Map<string, TrackedRequest>();
  private readonly waiting = new WaitingQueues();
  private readonly workers = new Map<string, WorkerSlot>();
  private newest: TrackedRequest | undefined;
  /** Requests enqueued so far: the next one's sequence number (the waiting orders' last tie-break). */
  private enqueued = 0;
  private readonly batching: BatchGate;
  private readonly deadlines = new TtftDeadlines();
  private readonly admission: Admission;
  private readonly preemption: PreemptionDeps;

  constructor(config: SchedulerConfigInput = {}, predictor?: LengthPredictor) {
    this.config = resolveConfig(config);
    this.policy = createPolicy(this.config);
    this.predictor = predictor ?? createPredictor(this.config.predictor);
    this.slos = new SloTable(this.config.defaultSlo, {});
    this.batching = new BatchGate(this.policy.batchedAdmission, this.policy.budgetSafety);
    // What admission.ts and preemption.ts may do to the scheduler's state (bound once, not per step).
    const starving = (r: TrackedRequest, now: number): boolean => now - r.spec.arrivalS > this.config.starvationS;
    const dropExceedsKv = (r: TrackedRequest, out: Decision[]): void => this.drop(r, 'exceeds-kv', out);
    const requeue = (slot: WorkerSlot, r: TrackedRequest): void => this.putBack(slot, r);
    this.admission = new Admission({ policy: this.policy, waiting: this.waiting, batching: this.batching, starving, dropExceedsKv });
    this.preemption = { policy: this.policy, starving, requeue, dropExceedsKv };
  }

  /**
   * Replaces the per-task SLOs (tasks not listed get `defaultSlo`; none are listed until the first call). A
   * request keeps the SLO its task had when it was enqueued: this changes what later arrivals are planned against.
   */
  setTaskSlos(perTask: Readonly<Record<string, Slo>>): void {
    this.slos = new SloTable(this.config.defaultSlo, perTask);
  }

  get waitingCount(): number {
    return this.waiting.size;
  }

  runningCount(workerId: string): number {
    return this.slot(workerId).running.size;
  }

  prediction(requestId: string): Prediction {
    return this.get(requestId).prediction;
  }

  enqueue(spec: RequestSpec): void {
    if (this.requests.has(spec.id)) throw new Error(`request "${spec.id}" is already known`);
    if (!Number.isInteger(spec.promptTokens) || spec.promptTokens < 1) {
      throw new Error(`request "${spec.id}": promptTokens must be a positive integer`);
    }
    if (!Number.isFinite(spec.arrivalS)) throw new Error(`request "${spec.id}": arrivalS must be finite`);
    const r = newTracked(spec, this.slos.of(spec.task), this.predictor.predict(spec.task, spec.promptTokens, spec.prompt), this.enqueued++);
    this.requests.set(spec.id, r);
    if (this.newest === undefined || spec.arrivalS >= this.newest.spec.arrivalS) this.newest = r;
    this.policy.onArrive(r);
    this.batching.onArrive(r);
    if (this.policy.triage) this.deadlines.add(r);
    this.waiting.push(r, this.policy.waitingKey(r));
  }

  /** Registers a worker or updates its capacity (a smaller KV budget causes preemption next step). */
  onWorkerState(state: WorkerState): void {
    validateWorkerState(state);
    const slot = this.workers.get(state.id);
    if (slot === undefined) this.workers.set(state.id, new WorkerSlot(state));
    else slot.state = state;
  }

  /** Forgets a worker; its running requests go back to the queues. Returns their ids. */
  removeWorker(workerId: string): string[] {
    const slot = this.slot(workerId);
    const ids = [...slot.running.keys()];
    for (const r of [...slot.running.values()]) this.putBack(slot, r);
    this.workers.delete(workerId);
    return ids;
  }

  scheduleAll(now: number): StepPlan[] {
    return [...this.workers.keys()].map((id) => this.schedule(now, id));
  }

  /**
   * Plans one step of `workerId`. `accepts` limits which tasks' waiting requests this worker may admit
   * (task placement over several workers); by default it takes any.
   */
  schedule(now: number, workerId: string, accepts: (task: string) => boolean = () => true): StepPlan {
    const slot = this.slot(workerId);
    const decisions: Decision[] = [];
    if (this.config.abortHopeless) this.abortHopeless(now, decisions);
    if (this.policy.triage) for (const r of this.deadlines.expire(now)) this.waiting.rekey(r, this.policy.waitingKey(r));
    relieveMemory(this.preemption, slot, now, decisions);
    // Requests that can still meet their SLO may be arriving while the newest arrival is younger than its TTFT SLO
    // (by its age, not by whether it got its first token in time: once served, it would otherwise count forever).
    const arriving = this.newest !== undefined && now - this.newest.spec.arrivalS <= this.newest.slo.ttftS;
    this.admission.admit(slot, now, accepts, arriving, decisions);
    let prefill = 0;
    for (const d of decisions) if (d.kind === 'admit') prefill += d.prefillTokens;
    // Prefill work that grows with what is admitted always counts. A fixed per-prefill-step cost (prefillStepS) is
    // not reduced by admitting less, but it stretches every decoding row's TPOT: it counts where the policy says so
    // (inlaid's budgetFixedPrefill; 'auto' = when it is small against the TPOT SLO of the rows it stretches).
    const fixedS = slot.state.stepCost?.prefillStepS ?? 0;
    const counts = prefill > 0 && fixedS > 0 && this.policy.countsFixedPrefill !== undefined && this.batching.active(slot);
    const fixed = counts && this.policy.countsFixedPrefill?.(fixedS, tightestRunningTpot(slot)) === true ? fixedS : 0;
    slot.prefill.record(now, prefill * (slot.state.stepCost?.prefillTokenS ?? 0) + fixed);
    if (prefill > 0) slot.lastPrefillS = now;
    return { workerId, decisions, batch: [...slot.running.keys()] };
  }

  onToken(requestId: string, now: number, count = 1): void {
    const r = this.get(requestId);
    if (r.phase !== 'running') throw new Error(`token for request "${requestId}" that is ${r.phase}`);
    if (r.firstTokenS === undefined) r.firstTokenS = now;
    for (let i = 0; i < count; i++) {
      r.generated += 1;
      this.policy.onToken(r);
    }
  }

  onFinish(requestId: string, now: number): RequestOutcome {
    const r = this.get(requestId);
    if (r.phase !== 'running' || r.workerId === undefined) throw new Error(`finish of request "${requestId}" that is ${r.phase}`);
    this.slot(r.workerId).remove(r);
    r.phase = 'finished';
    this.requests.delete(requestId);
    this.predictor.observe(r.spec.task, r.spec.promptTokens, r.generated, r.spec.prompt);
    const first = r.firstTokenS ?? now;
    const ttftS = first - r.spec.arrivalS;
    const tpotS = tpotOf(first, now, r.generated);
    return {
      id: requestId,
      task: r.spec.task,
      outputTokens: r.generated,
      ttftS,
      tpotS,
      latencyS: now - r.spec.arrivalS,
      metSlo: meetsSlo(r.slo, ttftS, tpotS),
      preemptions: r.preemptions,
    };
  }

  /**
   * Puts a running request back in the waiting queues, as a preemption (its worker gave it back unfinished, e.g. a
   * worker shutting down): its arrival, tokens, preemption count, MLFQ level and triage entry are kept.
   */
  requeue(requestId: string): void {
    const r = this.get(requestId);
    if (r.phase !== 'running' || r.workerId === undefined) throw new Error(`requeue of request "${requestId}" that is ${r.phase}`);
    this.putBack(this.slot(r.workerId), r);
  }

  /** Drops a request wherever it is (client went away). */
  cancel(requestId: string): void {
    const r = this.get(requestId);
    if (r.phase === 'waiting') this.waiting.noteRemoved();
    if (r.phase === 'running' && r.workerId !== undefined) this.slot(r.workerId).remove(r);
    r.phase = 'aborted';
    this.requests.delete(requestId);
  }

  /** Early abort, oldest first; stops at the first waiting request that is not hopeless. */
  private abortHopeless(now: number, out: Decision[]): void {
    for (let r = this.waiting.oldest(); r !== undefined; r = this.waiting.oldest()) {
      if (r.firstTokenS !== undefined || now - r.spec.arrivalS <= r.slo.ttftS) return;
      this.drop(r, 'hopeless', out);
    }
  }

  private drop(r: TrackedRequest, reason: 'hopeless' | 'exceeds-kv', out: Decision[]): void {
    if (r.phase === 'waiting') this.waiting.noteRemoved();
    r.phase = 'aborted';
    this.requests.delete(r.spec.id);
    out.push({ kind: 'abort', requestId: r.spec.id, reason });
  }

  private putBack(slot: WorkerSlot, r: TrackedRequest): void {
    slot.remove(r);
    r.preemptions += 1;
    this.waiting.push(r, this.policy.waitingKey(r));
  }

  private get(id: string): TrackedRequest {
    const r = this.requests.get(id);
    if (r === undefined) throw new Error(`unknown request "${id}"`);
    return r;
  }

  private slot(workerId: string): WorkerSlot {
    const s = this.workers.get(workerId);
    if (s === undefined) throw new Error(`unknown worker "${workerId}"; call onWorkerState first`);
    return s;
  }
}

/** Tightest TPOT SLO among `slot`'s running rows (+Infinity when none). */
function tightestRunningTpot(slot: WorkerSlot): number {
  let t = Number.POSITIVE_INFINITY;
  for (const r of slot.running.values()) t = Math.min(t, r.slo.tpotS);
  return t;
}
