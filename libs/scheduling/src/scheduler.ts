/**
 * The Scheduler: owns per-task waiting queues, each worker's running set and its KV budget, and turns
 * them into per-step decisions with the configured policy. Iteration-level: call `schedule` before
 * every step of a worker; every request in the returned batch runs in that step (new ones prefill).
 * Preemption drops KV (recompute on re-admission) and happens only when a worker's KV runs short,
 * lowest priority first. Anything waiting longer than `starvationS` goes ahead of all else; under a strict
 * policy, if it cannot be admitted yet, admissions pause until it can (so nothing starves); under inlaid it
 * must fit like any other request (see `Policy.starvingPausesAdmission`), and continuous aging keeps it first.
 * Inlaid's admissions also pass the SLO-aware step budget of step-budget.ts and, on workers with a fixed
 * prefill-step cost, the batched-admission gate of batch-gate.ts. Under a policy with `triage` (triage.ts), waiting
 * requests past their TTFT SLO are re-keyed behind the saveable ones before each plan, and the policy decides
 * (`promotesStarving`) whether a starving request is promoted.
 */
import { BatchGate } from './batch-gate';
import { resolveConfig, SchedulerConfig, SchedulerConfigInput } from './config';
import { compareKeys, Heap } from './heap';
import { blocksFor } from './kv';
import { createPolicy } from './policies/factory';
import { Policy } from './policies/policy';
import { createPredictor } from './predictor/factory';
import { LengthPredictor, Prediction } from './predictor/types';
import { meetsSlo, SloTable, tpotOf } from './slo';
import { pastTtft, StepGate } from './step-budget';
import { contextTokens, TrackedRequest } from './tracked';
import { TtftDeadlines } from './triage';
import { Decision, RequestOutcome, RequestSpec, StepPlan, WorkerState } from './types';
import { QueueEntry, WaitingQueues } from './waiting-queues';
import { validateWorkerState, WorkerSlot } from './worker-slot';

type AdmitResult = 'ok' | 'full' | 'nofit';

interface Budget {
  rows: number;
  usedBlocks: number;
  committedBlocks: number;
  prefillTokens: number;
}

export class Scheduler {
  readonly config: SchedulerConfig;
  readonly policy: Policy;
  readonly predictor: LengthPredictor;
  private readonly slos: SloTable;
  private readonly requests = new Map<string, TrackedRequest>();
  private readonly waiting = new WaitingQueues();
  private readonly workers = new Map<string, WorkerSlot>();
  private newest: TrackedRequest | undefined;
  private readonly batching: BatchGate;
  private readonly deadlines = new TtftDeadlines();

  constructor(config: SchedulerConfigInput = {}, predictor?: LengthPredictor) {
    this.config = resolveConfig(config);
    this.policy = createPolicy(this.config);
    this.predictor = predictor ?? createPredictor(this.config.predictor);
    this.slos = new SloTable(this.config.defaultSlo, this.config.taskSlos);
    this.batching = new BatchGate(this.policy.batchedAdmission);
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
    const r: TrackedRequest = {
      spec,
      slo: this.slos.of(spec.task),
      prediction: this.predictor.predict(spec.task, spec.promptTokens, spec.prompt),
      phase: 'waiting',
      workerId: undefined,
      generated: 0,
      firstTokenS: undefined,
      preemptions: 0,
      hopeless: false,
      version: 0,
      level: 0,
      levelTokens: 0,
    };
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
    for (const r of [...slot.running.values()]) this.requeue(slot, r);
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
    this.relieveMemory(slot, now, decisions);
    this.admit(slot, now, accepts, decisions);
    let prefill = 0;
    for (const d of decisions) if (d.kind === 'admit') prefill += d.prefillTokens;
    // Only prefill work that grows with what is admitted counts: a fixed per-prefill-step cost (prefillStepS)
    // is not reduced by admitting less (trickled admissions pay it more often), so the budget ignores it.
    const fixed = prefill > 0 && this.policy.budgetCountsFixedPrefill && this.batching.active(slot) ? (slot.state.stepCost?.prefillStepS ?? 0) : 0;
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

  /** Drops a request wherever it is (client went away). */
  cancel(requestId: string): void {
    const r = this.get(requestId);
    if (r.phase === 'waiting') this.waiting.noteRemoved();
    if (r.phase === 'running' && r.workerId !== undefined) this.slot(r.workerId).remove(r);
    r.phase = 'aborted';
    this.requests.delete(requestId);
  }

  private starving(r: TrackedRequest, now: number): boolean {
    return now - r.spec.arrivalS > this.config.starvationS;
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

  /** Evicts lowest-priority running requests until the next step's KV fits. */
  private relieveMemory(slot: WorkerSlot, now: number, out: Decision[]): void {
    const { kvBlocksTotal, blockSize } = slot.state;
    let used = 0;
    for (const r of slot.running.values()) used += blocksFor(contextTokens(r) + 1, blockSize);
    while (used > kvBlocksTotal && slot.running.size > 0) {
      let victim: TrackedRequest | undefined;
      let worst: number[] = [];
      for (const r of slot.running.values()) {
        const key = [this.starving(r, now) ? 0 : 1, ...this.policy.evictionKey(r)];
        if (victim === undefined || compareKeys(key, worst) > 0) [victim, worst] = [r, key];
      }
      const v = victim as TrackedRequest;
      used -= blocksFor(contextTokens(v) + 1, blockSize);
      if (slot.running.size === 1) {
        slot.remove(v);
        this.drop(v, 'exceeds-kv', out);
        return;
      }
      this.requeue(slot, v);
      out.push({ kind: 'preempt', requestId: v.spec.id, workerId: slot.state.id });
    }
  }

  private requeue(slot: WorkerSlot, r: TrackedRequest): void {
    slot.remove(r);
    r.preemptions += 1;
    this.waiting.push(r, this.policy.waitingKey(r));
  }

  private admit(slot: WorkerSlot, now: number, accepts: (task: string) => boolean, out: Decision[]): void {
    const b: Budget = { rows: slot.state.maxBatchRows - slot.running.size, usedBlocks: 0, committedBlocks: 0, prefillTokens: 0 };
    if (b.rows <= 0 || this.waiting.size === 0 || !this.batching.release(slot, now)) return;
    for (const r of slot.running.values()) {
      b.usedBlocks += blocksFor(contextTokens(r) + 1, slot.state.blockSize);
      b.committedBlocks += blocksFor(this.policy.reservedTokens(r), slot.state.blockSize);
    }
    // Requests that can still meet their SLO are arriving while the newest one is within its TTFT.
    const arriving = this.newest !== undefined && !pastTtft(this.newest, now);
    const gate = new StepGate(slot, now, this.policy.budgetSafety, arriving);
    // Starving requests first, oldest first. Strict policies: if one cannot go in, admit nothing else until
    // it can. Lenient ones (inlaid): it goes first wherever it fits under the same memory projection and
    // step budget as the rest, and one that does not fit leaves the rest to the policy's order.
    // The oldest one belonging to another worker ends this phase here (that worker pauses for it).
    const strict = this.policy.starvingPausesAdmission;
    for (let r = this.waiting.oldest(); r !== undefined && this.starving(r, now) && this.policy.promotesStarving(r); r = this.waiting.oldest()) {
      if (!accepts(r.spec.task)) break;
      const joinable = this.policy.canJoin(r.spec.task, slot) || this.policy.canFill(r.spec.task, slot);
      if (!joinable || (!strict && !gate.join(r, b.usedBlocks))) {
        if (strict) return;
        break;
      }
      const res = this.tryAdmit(slot, r, b, strict, out);
      if (res !== 'ok' && r.phase !== 'aborted') {
        if (strict) return;
        break;
      }
    }
    const closed = (): boolean => gate.closed(b.usedBlocks);
    if (closed()) return;
    const heads = this.waiting.heads().filter((e) => accepts(e.r.spec.task));
    const refused = this.admitHeads(slot, heads, b, (r) => this.policy.canJoin(r.spec.task, slot) && gate.join(r, b.usedBlocks), out, closed);
    // Work-conserving fill: rows still free after every joinable candidate go to the refused ones.
    if (refused !== 'full' && refused.length > 0 && b.rows > 0) {
      this.admitHeads(slot, refused, b, (r) => this.policy.canFill(r.spec.task, slot) && gate.fill(r, b.usedBlocks), out, closed);
    }
  }

  /**
   * Admits task-queue heads in the policy's head order while `allowed` says their task may join.
   * Returns 'full' when admission must stop (no rows left, or a head-of-line block), else the heads
   * refused by `allowed`.
   */
  private admitHeads(
    slot: WorkerSlot,
    heads: readonly QueueEntry[],
    b: Budget,
    allowed: (r: TrackedRequest) => boolean,
    out: Decision[],
    closed: () => boolean = () => false,
  ): QueueEntry[] | 'full' {
    type Head = { e: QueueEntry; key: number[] };
    const heap = new Heap<Head>((x, y) => compareKeys(x.key, y.key) || x.e.r.spec.arrivalS - y.e.r.spec.arrivalS);
    const pushHead = (e: QueueEntry | undefined): void => {
      if (e !== undefined) heap.push({ e, key: this.policy.headKey(e.r, e.key, slot) });
    };
    const refused: QueueEntry[] = [];
    for (const e of heads) pushHead(e);
    for (let h = heap.pop(); h !== undefined; h = heap.pop()) {
      if (closed()) return 'full';
      const r = h.e.r;
      if (!allowed(r)) {
        refused.push(h.e);
        continue;
      }
      const res = this.tryAdmit(slot, r, b, false, out);
      if (res === 'full') return 'full';
      if (res === 'nofit') {
        if (this.policy.headOfLineBlocking && r.phase !== 'aborted') return 'full';
        if (r.phase === 'aborted') pushHead(this.waiting.head(r.spec.task));
        continue;
      }
      pushHead(this.waiting.head(r.spec.task));
    }
    return refused;
  }

  private tryAdmit(slot: WorkerSlot, r: TrackedRequest, b: Budget, force: boolean, out: Decision[]): AdmitResult {
    const { kvBlocksTotal, blockSize, maxPrefillTokens } = slot.state;
    if (b.rows <= 0) return 'full';
    const prefill = contextTokens(r);
    if (b.prefillTokens > 0 && b.prefillTokens + prefill > maxPrefillTokens) return this.policy.headOfLineBlocking || force ? 'full' : 'nofit';
    const need = blocksFor(prefill + 1, blockSize);
    if (need > kvBlocksTotal) {
      this.drop(r, 'exceeds-kv', out);
      return 'nofit';
    }
    const reserve = Math.max(need, blocksFor(this.policy.reservedTokens(r), blockSize));
    if (b.usedBlocks + need > kvBlocksTotal) return 'nofit';
    // Memory-aware projection; skipped for starving requests and for an empty batch (it must progress).
    if (!force && slot.running.size > 0 && b.committedBlocks + reserve > kvBlocksTotal) return 'nofit';
    this.waiting.noteRemoved();
    slot.add(r);
    b.rows -= 1;
    b.usedBlocks += need;
    b.committedBlocks += reserve;
    b.prefillTokens += prefill;
    out.push({ kind: 'admit', requestId: r.spec.id, workerId: slot.state.id, prefillTokens: prefill });
    return 'ok';
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
