/**
 * Loads the tasks' adapters onto a worker whose Session comes up (one that starts after they were loaded, or
 * restarts): the gateway loads an adapter on the workers accepting at that moment (loadEverywhere), and the published
 * checkpoint a worker starts from holds no adapter. Each task the database says is served everywhere
 * (missing-adapters.ts) and the worker does not list is loaded there through the same admin call, under the task's
 * lock, re-read there: a DELETE or unload (same lock) either ran before and the task is not loaded, or runs after and
 * unloads it from this worker too; a load step under way finishes first. ALREADY_EXISTS counts as done. A worker whose
 * link was down while a task was deleted or replaced still lists the old adapter: one it holds from a LoadAdapter path
 * other than the task's latest served job's, or from the same path with another content digest than the job's (its
 * validate step's, then its load step's: the files rewritten in place; WorkerInfo.adapter_digests; unknown digests
 * compare paths only), is replaced (unloaded, then loaded from the job's path), and one whose task's latest job is not
 * served, or is live but not loaded yet and is not that job's own (another path, or another digest than the one its
 * validate step recorded), is unloaded (catchUpAction). The catch-up's own loads record nothing on the job: a load
 * that reads other bytes than the job's (the files changed again since its load step) is logged, and that digest is
 * settled for the job on that worker (missing-adapters.ts Settled), so it is not replaced again on every round (each
 * load would read the same new files) and its hold ends as for any task done. Settled digests live in this gateway's
 * memory only: a gateway restart forgets them, and each worker holding such an adapter gets one more replace (and its
 * warning) at its next Session (it then reads the same files again and is settled anew). A failure (database, worker,
 * an adapter refused) is logged and the worker's catch-up runs again on its next report (GetInfo after an admin call)
 * or after a backoff, for as long as its Session lasts; a stopping worker is skipped. It also runs again when an admin
 * call found the worker holding an adapter it would not unload because of requests in flight (recheck: an onboarding's
 * validate or load step once the job's digest is committed, a failed onboarding's unload, a vLLM-style load): a
 * catch-up that ran before the job had a digest could not tell the old adapter from the job's, and none runs between
 * Sessions otherwise.
 *
 * Until then no request for those tasks goes to the worker: its Session starts holding every adapter
 * (WorkerConnection.holdOnSessionStart), the first database read narrows the hold to the tasks to change there that
 * the fleet serves (catchUpHolds: not a task whose job is not served anywhere yet), and each is released once done:
 * the worker's model list, re-read, shows the task loaded from its job's path (or gone), or it refused the task for
 * good. Requests for a task no caught-up worker lists wait for it (WorkersService.pick); placement gives the worker
 * none of them, nor any when no worker lists them (SchedulingService.refresh, Placement.setWorker). Before, such a
 * request got a 404 there, or ran on the old adapter. A name held only to be unloaded (the task's locked section
 * decided 'unload', no job served everywhere behind it, e.g. a task deleted while its requests drain there, and the
 * worker refused it in use) is no task the fleet serves: its requests get the 404 at once, never that worker
 * (WorkerConnection.unloadingFor; before, they waited 30 s for a 503). If the database cannot be read (or takes over
 * 2 s) the hold ends (the worker serves what it lists, as before; Postgres being down must not stop inference) and the
 * catch-up is retried. So it does for one task whose locked section fails on the database's side (an error, or a round trip to
 * Postgres without an answer within sectionQueryMs: then the rest of the hold too, and the gate goes to the next
 * section), and for one the worker failed twice in a row (HOLD_FAILURES): the task is still retried, but not held again
 * in this Session. An unload the worker refuses because the adapter has requests in flight is no failure: the task
 * stays held (or is held again), so no new request goes there and those in flight drain, and the unload is retried
 * (a round whose only failures are such refusals, or busy locks, waits at most inUseRetryMs, 2 s, and grows no
 * backoff) until the worker lets it go; for at most inUseHoldMs (IN_USE_HOLD_MS, 10 min) from its first refusal in a
 * row: then its hold ends with a warning, and the unload is still retried, the backoff growing as after a failure. A task whose lock another holder keeps (a load
 * or unload everywhere, an onboarding's load step, a DELETE, another gateway's catch-up) is no database failure: past
 * lockBusyMs its section gives way to the next task, and the task stays held and is retried (the holder's load or
 * unload reaches this worker too, or its DELETE ends the task), without a longer backoff for a round that only found
 * busy locks while one of them is still held; once its lock has been busy for busyHoldMs (CATCH_UP_WAIT_MS, what a
 * request would wait anyway) its hold ends, it is still retried, with one lock try a round (not lockBusyMs of the
 * gate) and the backoff growing as after a failure. A task the worker refused for good is not held again (its
 * requests get the worker's 404 at once).
 */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { InlaidError } from '../common/inlaid-error';
import { backoffDelay, type BackoffOptions } from '../workers/backoff';
import type { WorkerConnection } from '../workers/worker-connection';
import { CATCH_UP_WAIT_MS, WorkersService } from '../workers/workers.service';
import { adapterOf, catchUpAction, catchUpHolds, catchUpTasks, type LoadJob, type Settled, type WorkerAdapters } from './missing-adapters';
import { DbTimeout, dbWithin, TaskLockBusy, TaskStore } from './task-store.service';
import { refusedInUse, toAdminError, WorkerAdminService } from './worker-admin.service';

const CATCH_UP_RETRY: BackoffOptions = { baseMs: 1000, maxMs: 60_000 };
/**
 * How long a Session's hold on every adapter waits for the database read that narrows it; past that the hold ends
 * (the worker serves what it lists) until the read answers.
 */
const READ_HOLD_MS = 2000;
/**
 * How long each round trip of a locked section to Postgres may take (its BEGIN, the lock's try, the job's read, the
 * COMMIT or ROLLBACK; not the wait for a lock another holder keeps, nor the worker calls, which have their own
 * deadlines), and taking a pooled connection (or the pool's own connectionTimeoutMillis, if shorter). Past it the
 * section is given up (its connection dropped; Postgres cancels a statement still running there, which aborts the
 * transaction and frees the task's lock at once, the session perhaps still open: TaskStore.locked), the hold ends, and
 * the gate goes to the next one. The section only reads, so a COMMIT without an answer (CommitOutcomeUnknown) is
 * retried as any DbTimeout.
 */
const SECTION_QUERY_MS = 10_000;
/**
 * How long a section waits for a task's lock that another holder keeps before it gives way (the gate is one section at
 * a time, gateway-wide): the task stays held and is retried.
 */
const LOCK_BUSY_MS = 1000;
/**
 * How long a task whose lock stays busy elsewhere stays held in a Session (from its first busy try): past it the hold
 * ends (a request waits no longer than this anyway: CATCH_UP_WAIT_MS), and the task is still retried.
 */
const BUSY_HOLD_MS = CATCH_UP_WAIT_MS;
/**
 * A task's failures in a row on the worker's side (its admin calls, its model list) that end the task's hold. An
 * unload the worker refuses because the adapter has requests in flight is no failure (not counted): the task stays
 * held so that they drain, however long they run.
 */
const HOLD_FAILURES = 2;
/**
 * How long a task whose unload the worker refuses because of requests in flight stays held there (from the first
 * refusal in a row): past it the hold ends with a warning (the worker serves what it lists: new requests may reach the
 * old adapter again) and the unload is still retried, with the backoff growing as after a failure. Requests that run
 * longer than this are not expected; a hold that never ends would keep the name's new requests (of a replace: a task
 * served everywhere; one only unloaded gets the 404 at once) waiting for 30 s and a 503 for as long as they keep coming.
 */
const IN_USE_HOLD_MS = 10 * 60_000;
/** The most a round whose only failures are refusals in use (a task still held) waits before its retry: requests drain fast. */
const IN_USE_RETRY_MS = 2000;
/** Refusals a retry cannot change (the adapter is bad for this worker, or every adapter slot is in use). */
const PERMANENT: ReadonlySet<status> = new Set([status.INVALID_ARGUMENT, status.RESOURCE_EXHAUSTED]);

/**
 * A section's unload (or a replace's) that the worker refused because of requests in flight; `unloading`: the section
 * only unloads the name there (its action 'unload': no job served everywhere behind it), so the hold it keeps is
 * WorkerConnection.unloadingFor's (requests for the name get the 404 at once), not a wait for a task the fleet serves.
 */
class RefusedInUse extends InlaidError {
  constructor(message: string, readonly unloading: boolean) {
    super(status.FAILED_PRECONDITION, message);
    this.name = 'RefusedInUse';
  }
}

/** [addr, task] -> `addr task`, the keys of AdapterCatchUp's maps (an address has no space); splitKey undoes it. */
function key(addr: string, task: string): string {
  return `${addr} ${task}`;
}

/** `addr task` (the keys of AdapterCatchUp's maps; an address has no space) -> [addr, task]. */
function splitKey(key: string): [string, string] {
  const at = key.indexOf(' ');
  return [key.slice(0, at), key.slice(at + 1)];
}

interface Due {
  attempt: number;
  running: boolean;
  timer: NodeJS.Timeout | null;
  /** task -> its catch-up's failures in a row in this Session. */
  failures: Map<string, number>;
  /** Tasks whose hold a failure ended: still retried, but not held again in this Session. */
  unheld: Set<string>;
  /** Tasks whose lock was held elsewhere at the last try (they go last, as failed ones) -> when it was first found busy in a
   * row while held (NaN: busy, not held). */
  busy: Map<string, number>;
  /** Tasks whose unload the worker refused because of requests in flight, in a row -> when first refused (the hold's
   * clock: inUseHoldMs). */
  inUse: Map<string, number>;
  /** Aborted when the Session ends or the module stops: a section still waiting for a lock stops polling. */
  abort: AbortController;
  /** recheck() came while a run was under way: one more run once it ends, whatever it found. */
  again: boolean;
}

@Injectable()
export class AdapterCatchUp implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('AdapterCatchUp');
  /** Workers (by address) whose current Session is not caught up yet. */
  private readonly due = new Map<string, Due>();
  private stopped = false;
  /** One catch-up section at a time, gateway-wide: each holds a pooled connection for a LoadAdapter call (up to the
   * admin timeout), and workers coming up together must not take the pool from onboarding, DELETE and records. */
  private gate: Promise<void> = Promise.resolve();
  /** `addr task` -> the job whose adapter that worker refused for good (bad adapter, no free slot): not retried until
   * the task's job changes or the worker's Session ends. */
  private readonly refused = new Map<string, string>();
  /**
   * `addr task` -> the digest this catch-up's load left there for the task's job when it was not the job's (Settled):
   * kept across the worker's Sessions (a link that drops and comes back: it still holds what was loaded). Pruned at
   * every catch-up's database read (pruneSettled): on every worker, the entries of a task whose live job changed or
   * ended (the jobs read are the fleet's); on the worker caught up, those of a task it no longer lists (it restarted,
   * or its adapter was unloaded). At most one entry per configured worker (WORKER_ADDRS, fixed at start) and live
   * task. In memory only: a gateway restart forgets them (one more replace, and its warning, per worker and such task
   * at the worker's next Session).
   */
  private readonly settled = new Map<string, Settled>();
  /** The wait before a retry of a failed catch-up (specs shorten it). */
  retry: BackoffOptions = CATCH_UP_RETRY;
  /** A locked section's bound on each round trip to Postgres (SECTION_QUERY_MS; specs shorten it). */
  sectionQueryMs = SECTION_QUERY_MS;
  /** How long a section waits for a lock held elsewhere (LOCK_BUSY_MS; specs change it). */
  lockBusyMs = LOCK_BUSY_MS;
  /** How long a task whose lock stays busy elsewhere stays held (BUSY_HOLD_MS; specs shorten it). */
  busyHoldMs = BUSY_HOLD_MS;
  /** How long a task refused in use stays held (IN_USE_HOLD_MS; specs shorten it). */
  inUseHoldMs = IN_USE_HOLD_MS;
  /** The cap on the wait before the retry of a round whose only failures are refusals in use (IN_USE_RETRY_MS). */
  inUseRetryMs = IN_USE_RETRY_MS;

  constructor(
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(TaskStore) private readonly store: TaskStore,
    @Inject(WorkerAdminService) private readonly admin: WorkerAdminService,
  ) {}

  onModuleInit(): void {
    for (const conn of this.workers.connections()) conn.holdOnSessionStart = true;
    this.workers.onLink((conn, event) => {
      if (event === 'up') this.sessionUp(conn);
      else if (event === 'down') this.clear(conn.addr);
    });
    this.workers.onWorkerInfo((addr) => {
      const due = this.due.get(addr);
      const conn = this.workers.acceptingConnections().find((c) => c.addr === addr);
      if (due !== undefined && !due.running && conn !== undefined) void this.run(conn, due);
    });
    // Sessions that came up before this listener (the workers' module starts first, and other modules' start-up hooks
    // run in between): they get no 'up' event, so they are due now
    for (const conn of this.workers.acceptingConnections()) {
      if (this.due.has(conn.addr)) continue;
      conn.holdAdapters('all');
      this.sessionUp(conn);
    }
  }

  onModuleDestroy(): void {
    this.stopped = true;
    for (const addr of [...this.due.keys()]) this.clear(addr);
  }

  /** Whether the worker's current Session is not caught up yet (a catch-up to run, under way, or to retry). */
  pending(addr: string): boolean {
    return this.due.has(addr);
  }

  private sessionUp(conn: WorkerConnection): void {
    // a new Session: a fresh entry ('down' removed the last one; a run of the old Session still going sees it replaced
    // and stops there, its loads having gone through the lock and the re-check like this run's)
    this.clear(conn.addr);
    const due = this.fresh();
    this.due.set(conn.addr, due);
    void this.run(conn, due);
  }

  private fresh(): Due {
    return { attempt: 0, running: false, timer: null, failures: new Map(), unheld: new Set(), busy: new Map(), inUse: new Map(), abort: new AbortController(), again: false };
  }

  /**
   * Runs the catch-up of worker `addr` again, now (after its current run, if one is under way), within its Session: an
   * admin call found it holding an adapter it could not unload (requests in flight: UnloadFailed.inUse), an onboarding's
   * validate or load step (once the job's digest is committed) or a failure's unload. The catch-up then holds the name
   * there (catchUpHolds: the job's digest tells the old adapter from the job's; a failed or deleted job's adapter is
   * no live job's), so no new request goes there and those in flight drain, and retries its unload with the backoff
   * until the worker lets it go (a refusal in use counts as no failure, HOLD_FAILURES; the hold ends after
   * inUseHoldMs). Also DELETE's and unloadLora's, for the workers that refused their unload in use, and after a rolled
   * back one (OwnAdapterInUse), for those that unloaded it (it loads a served job's adapter back). Callers call it once
   * their transaction is over. `addrs`: one worker or several. A no-op for a worker not accepting.
   */
  recheck(addrs: string | readonly string[]): void {
    if (typeof addrs !== 'string') {
      for (const addr of addrs) this.recheck(addr);
      return;
    }
    const addr = addrs;
    const conn = this.workers.acceptingConnections().find((c) => c.addr === addr);
    if (this.stopped || conn === undefined) return;
    let due = this.due.get(addr);
    if (due === undefined) {
      due = this.fresh();
      this.due.set(addr, due);
    }
    if (due.running) due.again = true;
    else void this.run(conn, due);
  }

  private clear(addr: string): void {
    for (const k of [...this.refused.keys()]) if (k.startsWith(`${addr} `)) this.refused.delete(k);
    const due = this.due.get(addr);
    if (due?.timer) clearTimeout(due.timer);
    due?.abort.abort(new Error(`worker ${addr}'s Session ended`));
    this.due.delete(addr);
  }

  /** One catch-up of `conn`; never throws. Done: the worker is no longer due; failed: retried (next report, or the backoff). */
  private async run(conn: WorkerConnection, due: Due): Promise<void> {
    if (due.timer) clearTimeout(due.timer);
    due.timer = null;
    due.running = true;
    let failed: number;
    let busyOnly = false;
    let inUseOnly = false;
    try {
      ({ failed, busyOnly, inUseOnly } = await this.loadMissing(conn, due));
    } catch (err) {
      this.logger.error(`catching up worker ${conn.addr}: ${(err as Error).message}`);
      failed = 1;
    } finally {
      due.running = false;
    }
    if (this.stopped || this.due.get(conn.addr) !== due) return; // its Session ended meanwhile
    if (due.again) {
      // a recheck during the run, which may have read the jobs before what asked for it was committed
      due.again = false;
      void this.run(conn, due);
      return;
    }
    if (failed === 0) {
      this.due.delete(conn.addr);
      return;
    }
    // a round that only found task locks busy elsewhere, one still held, is no failure: the backoff does not grow; nor
    // one that only found adapters in use (with such busy locks, perhaps), one still held: retried within inUseRetryMs
    const delay = backoffDelay(busyOnly || inUseOnly ? due.attempt : due.attempt++, this.retry);
    due.timer = setTimeout(() => void this.run(conn, due), inUseOnly ? Math.min(delay, this.inUseRetryMs) : delay);
    due.timer.unref();
  }

  private oneAtATime<T>(section: () => Promise<T>): Promise<T> {
    const run = this.gate.then(section, section);
    this.gate = run.then(() => undefined, () => undefined);
    return run;
  }

  /**
   * Loads, replaces and unloads what `conn` needs (catchUpAction); returns how many failed (each logged), and whether
   * each of those only found its task's lock busy elsewhere. Stops (and leaves the hold alone) once `due` is not the
   * worker's entry: a new Session has its own run and hold.
   */
  private async loadMissing(conn: WorkerConnection, due: Due): Promise<{ failed: number; busyOnly: boolean; inUseOnly: boolean }> {
    const current = (): boolean => this.due.get(conn.addr) === due && !this.stopped;
    if (!conn.accepting) {
      if (current()) conn.holdAdapters(null); // stopping: it goes away (a worker in its place comes up with a new Session)
      return { failed: 0, busyOnly: false, inUseOnly: false };
    }
    // a database that does not answer must not keep the worker's adapters from being served (Postgres being away
    // stops no inference): the worker serves what it lists until the read answers (failed: until a retry's does)
    const slow = setTimeout(() => {
      if (current() && conn.adapterHold === 'all') conn.holdAdapters(null);
    }, READ_HOLD_MS);
    let jobs;
    try {
      jobs = await this.store.liveWithAdapter();
    } catch (err) {
      if (current()) conn.holdAdapters(null);
      throw err;
    } finally {
      clearTimeout(slow);
    }
    if (!current()) return { failed: 0, busyOnly: false, inUseOnly: false };
    const jobOf = new Map(jobs.map((j) => [j.task, j.id]));
    this.pruneSettled(conn, jobOf);
    const reported = this.reported(conn);
    const tasks = catchUpTasks(jobs, reported);
    // a task no longer to catch up (the holder's load reached the worker, its DELETE ended it) forgets its busy lock:
    // else, should it be due again later in this Session, its hold would end at its first busy try
    const toDo = new Set(tasks);
    for (const t of [...due.busy.keys()]) if (!toDo.has(t)) due.busy.delete(t);
    for (const t of [...due.inUse.keys()]) if (!toDo.has(t)) due.inUse.delete(t);
    // tasks that failed before, or whose lock was held elsewhere, go last: they starve no other
    const later = (t: string): number => (due.failures.get(t) ?? 0) + (due.busy.has(t) ? 1 : 0);
    tasks.sort((x, y) => later(x) - later(y));
    // not one the worker refused for good (for this job): its 404 is the answer, at once
    const refused = (t: string): boolean => jobOf.has(t) && this.refused.get(key(conn.addr, t)) === jobOf.get(t);
    // only these are held: catchUpTasks also has tasks never in the hold (a live job not yet served, one refused for good)
    const holds = new Set(catchUpHolds(tasks, jobs, reported).filter((t) => !due.unheld.has(t) && !refused(t)));
    // the names marked "only to unload" stay marked while still held: a mark is set only under the task's lock, when
    // the worker refused an 'unload' (hold), from committed rows; marking from this read (outside the lock) would call a
    // name unloading whose job a concurrent load_lora_adapter or load step has not committed yet, and 404 a task it
    // had just loaded
    conn.holdAdapters(holds, conn.unloadingHold);
    let failed = 0;
    let busy = 0;
    /** Busy tasks still held (their lock busy for less than busyHoldMs): only those keep the backoff from growing. */
    let busyHeld = 0;
    /** Tasks refused in use, and those of them still held (within inUseHoldMs). */
    let inUse = 0;
    let inUseHeld = 0;
    for (const [i, task] of tasks.entries()) {
      if (!conn.accepting || !current()) break;
      // held: its requests wait for it (not a task never in the hold, nor one whose hold ended this Session: `holds`
      // leaves out due.unheld, and this pass adds to it only the task in hand, each task coming once)
      const held = holds.has(task);
      try {
        // a task not held (its requests do not wait for it) gets one lock try, not lockBusyMs of the gate
        const busyMs = held ? this.lockBusyMs : 0;
        await this.oneAtATime(() => this.section(conn, task, current, due.abort.signal, busyMs));
        due.failures.delete(task);
        due.busy.delete(task);
        due.inUse.delete(task);
        if (current()) conn.releaseAdapter(task);
      } catch (err) {
        failed++;
        if (err instanceof TaskLockBusy) {
          // only waiting: Postgres answers, and the holder's load or unload reaches this worker too (or its DELETE
          // ends the task); the task stays held (no failure counted) and is retried, the others go on; a lock busy
          // for longer than busyHoldMs ends the task's hold (its requests would have waited that long for a 503)
          busy++;
          // busy since its section began to wait; the hold's clock runs only while the task is held (NaN: busy, not
          // held), so a task held only from this round on (its live job now served) starts it now, not rounds ago
          const prev = due.busy.get(task);
          const since = !held ? NaN : prev !== undefined && !Number.isNaN(prev) ? prev : Date.now() - this.lockBusyMs;
          due.busy.set(task, since);
          if (held && Date.now() - since >= this.busyHoldMs && current()) {
            due.unheld.add(task);
            conn.releaseAdapter(task);
            this.logger.warn(`the lock of ${task} has been held elsewhere for over ${this.busyHoldMs} ms: worker ${conn.addr} serves what it lists (retried)`);
          } else {
            if (held) busyHeld++;
            this.logger.log(`the lock of ${task} is held elsewhere: worker ${conn.addr}'s catch-up retries it`);
          }
          continue;
        }
        due.busy.delete(task);
        if (err instanceof RefusedInUse) {
          // the adapter to go has requests in flight there (the worker never unloads one in use): no failure of the
          // worker's (HOLD_FAILURES counts none), so the task stays held, or is held again if a failure ended its hold:
          // no new request goes there, those in flight drain, and the unload is retried (within inUseRetryMs); for at
          // most inUseHoldMs from its first refusal in a row, then its hold ends (retried, the backoff growing)
          inUse++;
          const since = due.inUse.get(task) ?? Date.now();
          due.inUse.set(task, since);
          if (Date.now() - since >= this.inUseHoldMs) {
            due.unheld.add(task);
            if (current()) conn.releaseAdapter(task);
            this.logger.warn(`${task} has had requests in flight on worker ${conn.addr} for over ${this.inUseHoldMs} ms: no longer held there, its unload retried (${err.message})`);
            continue;
          }
          inUseHeld++;
          due.unheld.delete(task);
          if (current()) this.hold(conn, task, err.unloading);
          this.logger.log(`${task} has requests in flight on worker ${conn.addr}: held there until they finish, its unload retried (${err.message})`);
          continue;
        }
        due.inUse.delete(task);
        const n = (due.failures.get(task) ?? 0) + 1;
        due.failures.set(task, n);
        const worker = err instanceof InlaidError; // the worker's refusal or its link's failure (else: the database, or a bug)
        const permanent = err instanceof InlaidError && PERMANENT.has(err.status);
        // refused for good: it cannot serve the task (it no longer lists it), so its 404 is the answer; a failure on
        // the database's side, or the worker's twice in a row: it serves what it lists (requests would wait for 30 s,
        // then get a 503, for as long as the failures go on)
        if (current() && (permanent || !worker || n >= HOLD_FAILURES)) {
          if (!permanent) due.unheld.add(task);
          conn.releaseAdapter(task);
        }
        this.logger.warn(`could not catch up ${task} on worker ${conn.addr} (retried): ${(err as Error).message}`);
        if (err instanceof DbTimeout) {
          // Postgres does not answer: as when its read does not, the worker serves what it lists until a retry's read does
          if (current()) conn.holdAdapters(null);
          return { failed: failed + tasks.length - i - 1, busyOnly: false, inUseOnly: false };
        }
      }
    }
    // only busy locks, one of them still held: no failure, the backoff does not grow (the holder ends soon); once no
    // busy task is held any more (its lock busy past busyHoldMs), the backoff grows as after any failure
    // only refusals in use (and busy locks), one of them still held: no failure either, retried within inUseRetryMs
    return {
      failed,
      busyOnly: failed > 0 && failed === busy && busyHeld > 0,
      inUseOnly: failed > 0 && failed === busy + inUse && inUseHeld > 0,
    };
  }

  /**
   * One task's locked section: decides under the task's lock (catchUpAction), then loads, replaces or unloads it and
   * checks the worker's model list shows it done (confirm). Each of its round trips to Postgres is bounded
   * (sectionQueryMs: past it, DbTimeout, its connection dropped), the wait for a lock held elsewhere too (lockBusyMs:
   * TaskLockBusy), and `signal` (the Session's end, the module's) stops that wait.
   */
  private section(conn: WorkerConnection, task: string, current: () => boolean, signal: AbortSignal, busyMs = this.lockBusyMs): Promise<void> {
    const queryMs = this.sectionQueryMs;
    return this.store.locked(task, async (tx) => {
      const job = await dbWithin(tx.latest(task), queryMs, "the task's job");
      await this.decide(conn, task, job, current); // the worker calls have their own deadlines
    }, { queryMs, busyMs, signal });
  }

  /**
   * Adds `task` to `conn`'s hold (from 'all' it is held already); `unloading`: only to unload it there, as the section
   * under the task's lock decided (WorkerConnection.unloadingFor: its requests get the 404 at once), else to replace it.
   */
  private hold(conn: WorkerConnection, task: string, unloading: boolean): void {
    const held = conn.adapterHold;
    if (held === 'all' || (held?.has(task) === true && conn.unloadingFor(task) === unloading)) return;
    const others = [...conn.unloadingHold].filter((t) => t !== task);
    conn.holdAdapters(new Set([...(held ?? []), task]), unloading ? [...others, task] : others);
  }

  /**
   * Drops the Settled entries that can no longer apply (settled's doc): of a task whose live job is not the one settled
   * (`jobOf`: task -> its live job, as just read for the whole fleet), and of a task `conn` no longer lists. (Every
   * entry's address is a configured worker's: entries are made for WorkersService.connections(), fixed at start from
   * WORKER_ADDRS.)
   */
  private pruneSettled(conn: WorkerConnection, jobOf: ReadonlyMap<string, string>): void {
    const listed = new Set(conn.models().map((m) => m.id));
    for (const [key, s] of [...this.settled]) {
      const [addr, task] = splitKey(key);
      const gone = jobOf.get(task) !== s.job || (addr === conn.addr && !listed.has(task));
      if (gone) this.settled.delete(key);
    }
  }

  /** The number of Settled entries (specs). */
  get settledCount(): number {
    return this.settled.size;
  }

  /** What `conn` reports of every name it lists, with the digests settled there (missing-adapters.ts). */
  private reported(conn: WorkerConnection): WorkerAdapters {
    const listed = new Set(conn.models().map((m) => m.id));
    const paths = new Map<string, string>();
    const digests = new Map<string, string>();
    const settled = new Map<string, Settled>();
    for (const name of listed) {
      const path = conn.adapterPath(name);
      if (path !== undefined) paths.set(name, path);
      const digest = conn.adapterDigest(name);
      if (digest !== undefined) digests.set(name, digest);
      const s = this.settled.get(key(conn.addr, name));
      if (s !== undefined) settled.set(name, s);
    }
    return { listed, paths, digests, settled };
  }

  private async decide(conn: WorkerConnection, task: string, job: Awaited<ReturnType<TaskStore['latest']>>, current: () => boolean): Promise<void> {
    if (!conn.accepting || !current()) return;
    const action = catchUpAction(job, adapterOf(this.reported(conn), task));
    const k = key(conn.addr, task);
    const refused = job !== null && this.refused.get(k) === job.id; // its adapter: not retried for this job
    if (action === 'none' || (action === 'load' && refused)) return;
    if (action !== 'load') {
      try {
        await this.admin.unloadOn(conn, task); // replace or unload: the old adapter goes first
      } catch (err) {
        throw refusedInUse(err) ? new RefusedInUse((err as Error).message, action === 'unload') : err;
      }
      await this.confirm(conn, task, null);
    }
    if (action === 'unload' || job === null || refused) {
      this.logger.log(`unloaded ${task} from worker ${conn.addr}: ${action === 'unload' ? "its latest job is not served, or not loaded yet and this is not that job's adapter" : 'an older job\'s adapter'}`);
      return;
    }
    let digest: string | undefined;
    try {
      digest = (await this.admin.loadOn(conn, task, job.adapterPath as string)).digest;
    } catch (err) {
      if (err instanceof InlaidError && PERMANENT.has(err.status)) this.refused.set(k, job.id);
      throw err;
    }
    await this.confirm(conn, task, job.adapterPath as string);
    this.refused.delete(k);
    this.logger.log(action === 'load' ? `loaded ${task} onto worker ${conn.addr}, which came up without it` : `replaced ${task} on worker ${conn.addr}: it held another adapter (another path, or other files at the path)`);
    this.settle(conn, task, job, digest ?? conn.adapterDigest(task));
  }

  /**
   * After this catch-up's load or replace from the job's path: a digest other than the job's (the files there changed
   * since its load step, and the load read what is there now) is logged and settled for the job on this worker, so no
   * later round replaces it again (that would loop: every load reads the same new files); its hold ends as for any task
   * done (the worker serves what is at the job's path now). An unknown digest, or the job's, settles nothing.
   */
  private settle(conn: WorkerConnection, task: string, job: LoadJob, digest: string | undefined): void {
    const k = key(conn.addr, task);
    if (job.adapterDigest === null || digest === undefined || digest === job.adapterDigest) {
      this.settled.delete(k);
      return;
    }
    this.settled.set(k, { job: job.id, digest });
    this.logger.warn(`worker ${conn.addr} loaded ${task} from ${job.adapterPath ?? ''} with digest ${digest}, not ${job.adapterDigest} as its job's load step did: the files there changed since; it serves them, and is not replaced again for this job`);
  }

  /**
   * Whether the gateway sees the worker serve `task` from `path` (any path where the worker reports none: its own, or
   * it predates adapter_paths), or no longer list it (`path` null): loadOn / unloadOn re-read its model list but go
   * on when that fails; the hold ends only on what the gateway sees (else the request went there with the old list).
   * Re-reads it once more; still not so: the worker's failure (an InlaidError, retried).
   */
  private async confirm(conn: WorkerConnection, task: string, path: string | null): Promise<void> {
    const done = (): boolean => {
      if (path === null) return !conn.serves(task);
      const at = conn.adapterPath(task);
      return conn.serves(task) && (at === undefined || at === path);
    };
    if (done()) return;
    try {
      await conn.refreshInfo();
    } catch (err) {
      throw toAdminError(err);
    }
    if (!done()) throw InlaidError.unavailable(`worker ${conn.addr} does not report ${task} ${path === null ? 'unloaded' : `loaded from ${path}`}`);
  }
}
