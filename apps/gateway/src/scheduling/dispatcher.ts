/**
 * Applies the Scheduler's decisions to real worker links (no Nest, no timers: the service drives it).
 * Requests wait in the Scheduler's queues; each pass asks the policy what to admit on every registered
 * worker, least loaded first (ties by configured order), and starts those runs. With several workers a
 * task's waiting requests are admitted only by its home worker (placement.ts: affinity with bounded
 * imbalance; a leaving worker's tasks move at once, a joining one takes new tasks). Token deltas feed the
 * Scheduler (onToken / onFinish, so the length predictor learns online) and flow on to the ticket.
 *
 * Decisions: admit -> Admit on the worker; preempt -> Abort on the worker, the request waits again and is
 * later resumed by recompute (resume.ts); abort -> the client gets an error (errors.ts). A lost worker:
 * requests that already streamed output fail with UNAVAILABLE, the others wait for another worker (or fail
 * with UNAVAILABLE when none is left). A worker that says it is stopping (WorkerState.draining, sent as soon as it
 * starts refusing Admits: workerUp's `draining`) is drained: it admits nothing more until its link goes down and its
 * tasks are placed elsewhere. A run it refuses as shutting down (RequestErrorKind SHUTTING_DOWN: the race of an Admit
 * sent before that state arrived) drains it the same way, and that run waits again like a lost worker's, kept as a
 * preemption (resumed by recompute if it had output before). A worker's refusal of a resumed run (one admitted with
 * output already produced) is never the client's 400 (rerunRefusal). Every run has a worker-side id of its own
 * (resume.ts runRequestId), so an id a client reuses right after cancelling never meets the worker still holding the
 * aborted run, nor do two gateways' runs meet on a worker they share.
 */
import { status } from '@grpc/grpc-js';
import { common, worker } from '@inlaid/proto';
import type { Decision, Scheduler, WorkerState } from '@inlaid/scheduling';
import { InlaidError, rerunRefusal, WORKER_UNAVAILABLE_MESSAGE } from '../common/inlaid-error';
import { AsyncQueue } from '../workers/async-queue';
import { abortError } from './errors';
import { DEFAULT_PLACEMENT, Placement, PlacementOptions } from './placement';
import { admitFor, PreparedRequest, rebaseDelta } from './resume';
import type { StepObserver } from './served-cost';
import { Run, Ticket, WorkerLink } from './ticket';

/**
 * Token deltas a request may have waiting for its consumer (at a worker's ~100 steps a second, 40 s of backlog).
 * The backlog of a client that does not read builds in its ticket's `events` (the worker link's queue is read at
 * once by `consume`), so the bound is kept there: past it the run is stopped and the ticket fails.
 */
export const MAX_QUEUED_DELTAS = 4096;

export interface DispatcherLogger {
  warn(message: string): void;
}

/** Whether a run failed because its worker is shutting down (the kind the worker named). */
function shutsDown(err: Error): boolean {
  return err instanceof InlaidError && err.details.workerKind === worker.RequestErrorKind.REQUEST_ERROR_KIND_SHUTTING_DOWN;
}

export class Dispatcher {
  private readonly links = new Map<string, WorkerLink>();
  private readonly tickets = new Map<string, Ticket>();
  /** Runs started so far: the next run's number (its worker-side id, runRequestId). */
  private runSeq = 0;
  /** Workers stopping (their state says so, or they refused a run as shutting down): they admit nothing more until their link goes down. */
  private readonly draining = new Set<string>();
  readonly placement: Placement;
  /** Told about every run and delta, per worker (INLAID_COST_FIT: served-step timing). */
  private observer: StepObserver | null = null;

  constructor(
    readonly scheduler: Scheduler,
    private readonly clock: () => number,
    private readonly logger: DispatcherLogger,
    /** Configured worker order, for ties between equally loaded workers. */
    private readonly order: readonly string[] = [],
    placement: PlacementOptions = DEFAULT_PLACEMENT,
  ) {
    this.placement = new Placement(order, placement);
  }

  observe(o: StepObserver): void {
    this.observer = o;
  }

  /** Requests known to the gateway (waiting or running). */
  get inFlight(): number {
    return this.tickets.size;
  }

  get waiting(): number {
    return this.scheduler.waitingCount;
  }

  get workerCount(): number {
    return this.links.size;
  }

  /**
   * Registers a worker (or updates its capacity and the tasks it lists: resident adapters, models) and schedules.
   * `draining`: its state says it is stopping (WorkerState.draining): it is drained from now on (drain). `holds`: the
   * tasks not to place there yet, even when no worker lists them (Placement.setWorker: its adapter catch-up).
   */
  workerUp(link: WorkerLink, capacity: WorkerState, tasks: readonly string[] = [], draining = false, holds?: (task: string) => boolean): void {
    this.scheduler.onWorkerState(capacity);
    this.links.set(link.addr, link);
    if (draining) this.drain(link.addr, 'says it is stopping');
    if (!this.draining.has(link.addr)) this.placement.setWorker(link.addr, tasks, holds);
    this.pass();
  }

  workerDown(addr: string): void {
    if (!this.links.has(addr)) return;
    for (const t of [...this.tickets.values()]) {
      if (t.run?.link.addr !== addr) continue;
      t.run = null; // its queue is about to fail: ignore that
      if (t.delivered) this.finishWith(t, InlaidError.unavailable(WORKER_UNAVAILABLE_MESSAGE)); // its address only in the log
    }
    this.scheduler.removeWorker(addr); // the rest wait again, with no output lost
    this.links.delete(addr);
    this.draining.delete(addr);
    this.observer?.workerGone(addr);
    this.placement.removeWorker(addr); // their tasks get a new home
    if (this.links.size === 0) {
      for (const t of [...this.tickets.values()]) this.finishWith(t, InlaidError.unavailable('No inference worker is ready; retry shortly.'));
    }
    this.pass();
  }

  /** Queues a prepared request; read the ticket's `admitted`, then its `events`. */
  submit(req: PreparedRequest, task: string, prompt: string | undefined): Ticket {
    if (this.links.size === this.draining.size) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    // GenerationService.reserve holds every client's id while it runs, and generated ids are fresh: never true (a plain
    // Error is a bug: logged by fromWorkerError, a 500 to the client)
    if (this.tickets.has(req.id)) throw new Error(`dispatcher invariant broken: request ${req.id} is already queued or running`);
    const ticket = new Ticket(req, task);
    this.scheduler.enqueue({ id: req.id, task, promptTokens: Math.max(1, req.promptTokenIds.length), arrivalS: this.clock(), prompt });
    this.tickets.set(req.id, ticket);
    this.placement.arrive(task);
    this.pass();
    return ticket;
  }

  /** The consumer went away: drop the request wherever it is. */
  cancel(id: string): void {
    const t = this.tickets.get(id);
    if (t === undefined) return;
    this.stopRun(t);
    this.scheduler.cancel(id);
    this.forget(t);
    t.end();
    this.pass();
  }

  /** One scheduling pass over every worker, least loaded first. */
  pass(): void {
    if (this.tickets.size === 0) return;
    const now = this.clock();
    const rank = (addr: string): number => this.scheduler.runningCount(addr);
    const pos = (addr: string): number => (this.order.indexOf(addr) + this.order.length + 1) % (this.order.length + 1);
    const addrs = [...this.links.keys()].sort((a, b) => rank(a) - rank(b) || pos(a) - pos(b));
    for (const addr of addrs) {
      if (!this.links.has(addr)) continue;
      const home = this.draining.has(addr) ? () => false : (task: string): boolean => this.placement.homeOf(task) === addr;
      for (const d of this.scheduler.schedule(now, addr, home).decisions) this.apply(d);
    }
  }

  private apply(d: Decision): void {
    const t = this.tickets.get(d.requestId);
    if (t === undefined) return;
    if (d.kind === 'admit') {
      const link = this.links.get(d.workerId);
      if (link !== undefined) this.startRun(t, link);
    } else if (d.kind === 'preempt') {
      this.stopRun(t);
    } else {
      this.stopRun(t);
      this.forget(t);
      t.fail(abortError(d.reason, t));
    }
  }

  private startRun(t: Ticket, link: WorkerLink): void {
    const admit = admitFor(t.req, t.generated, ++this.runSeq);
    let queue: AsyncQueue<worker.TokenDelta>;
    try {
      queue = link.admit(admit);
    } catch (err) {
      this.finishWith(t, err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const run = { link, requestId: admit.requestId, base: t.generated.length };
    this.observer?.admitted(link.addr, admit.requestId, this.clock());
    t.run = run;
    t.started(link.addr);
    void this.consume(t, run, queue);
  }

  private stopRun(t: Ticket): void {
    const run = t.run;
    t.run = null;
    if (run === null || run === undefined) return;
    this.observer?.ended(run.link.addr, run.requestId);
    run.link.abort(run.requestId);
  }

  private async consume(t: Ticket, run: NonNullable<Ticket['run']>, queue: AsyncQueue<worker.TokenDelta>): Promise<void> {
    try {
      for await (const d of queue) {
        if (t.run !== run) return;
        this.observeDelta(t, run, d);
        this.onDelta(t, run.base, d);
      }
    } catch (err) {
      if (t.run === run) this.runFailed(t, run, err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * A run its worker ended with an error (a RequestError, or its link failing). A worker refusing it as shutting down is
   * drained, and a run that produced nothing yet waits again (resumed from the output it had, if any); a resumed run
   * (admitted with output already produced) is never refused as the client's bad input (rerunRefusal); otherwise the
   * ticket fails with the error.
   */
  private runFailed(t: Ticket, run: Run, err: Error): void {
    if (shutsDown(err)) {
      this.drain(run.link.addr, 'refused a run as shutting down');
      if (t.generated.length === run.base) {
        this.requeue(t);
        return;
      }
    }
    this.finishWith(t, run.base > 0 ? rerunRefusal(err) : err);
  }

  /** Stops admitting to `addr` (shutting down: `why`) until its link goes down; its tasks get a new home at once. */
  private drain(addr: string, why: string): void {
    if (!this.links.has(addr) || this.draining.has(addr)) return;
    this.draining.add(addr);
    this.placement.removeWorker(addr);
    this.logger.warn(`worker ${addr} ${why}: no more requests are admitted there`);
  }

  /** Puts a ticket whose run ended without output back in the scheduler's queue, as a preemption, and schedules. */
  private requeue(t: Ticket): void {
    this.stopRun(t);
    this.scheduler.requeue(t.req.id);
    this.pass();
  }

  private observeDelta(t: Ticket, run: NonNullable<Ticket['run']>, d: worker.TokenDelta): void {
    if (this.observer === null) return;
    const finished = d.finishReason !== common.FinishReason.FINISH_REASON_UNSPECIFIED;
    this.observer.delta(run.link.addr, this.clock(), { id: run.requestId, task: t.task, promptTokens: d.promptTokens, completionTokens: d.completionTokens, tokens: d.tokenIds.length, finished }, this.scheduler.waitingCount);
  }

  private onDelta(t: Ticket, base: number, d: worker.TokenDelta): void {
    const now = this.clock();
    if (d.tokenIds.length > 0) {
      this.scheduler.onToken(t.req.id, now, d.tokenIds.length);
      t.generated.push(...d.tokenIds);
    }
    t.events.push({ kind: 'delta', delta: rebaseDelta(t.req, d, base) });
    if (d.finishReason === common.FinishReason.FINISH_REASON_UNSPECIFIED) {
      if (t.events.length > MAX_QUEUED_DELTAS) this.stopUnread(t);
      return;
    }
    t.run = null;
    this.forget(t);
    if (d.finishReason === common.FinishReason.FINISH_REASON_STOP || d.finishReason === common.FinishReason.FINISH_REASON_LENGTH) {
      this.scheduler.onFinish(t.req.id, now); // the predictor learns the true length here
    } else {
      this.scheduler.cancel(t.req.id); // ended by the worker (abort/error): not a length sample
    }
    t.end();
    this.pass();
  }

  /**
   * Its consumer stopped taking deltas (a streaming client that does not read: the responders wait for drain) while
   * the worker goes on: stop the run and fail the ticket (what was queued is still delivered first) rather than hold
   * its deltas without bound, and give its slot to the next request.
   */
  private stopUnread(t: Ticket): void {
    this.finishWith(
      t,
      new InlaidError(
        status.RESOURCE_EXHAUSTED,
        `The client did not read its stream: more than ${MAX_QUEUED_DELTAS} token deltas were waiting, so the request was stopped.`,
      ),
    );
    this.pass();
  }

  /** Drops a ticket from the dispatcher and its task's placement; false if it was already gone. */
  private forget(t: Ticket): boolean {
    if (!this.tickets.delete(t.req.id)) return false;
    this.placement.leave(t.task);
    return true;
  }

  /** Removes a ticket from the Scheduler and the worker, and fails it with `err`. */
  private finishWith(t: Ticket, err: Error): void {
    this.stopRun(t);
    if (this.forget(t)) {
      try {
        this.scheduler.cancel(t.req.id);
      } catch (e) {
        this.logger.warn(`scheduler did not know request ${t.req.id}: ${(e as Error).message}`);
      }
    }
    t.fail(err);
  }
}
