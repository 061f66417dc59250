/**
 * Postgres side of onboarding: task_jobs rows (status, stage progress, layers, errors, history) and the
 * tasks table. Every write is a small read-modify-write of one row; steps are re-runnable, so writes are
 * idempotent (a stage marked done twice stays done).
 *
 * `locked(name, fn)` serializes what changes a task's adapter on the workers (load, unload) together with the
 * status write that goes with it, across gateways: DELETE, and the onboarding steps that load the adapter or
 * move the task's status (onboard-steps.ts), each re-read the row under the lock.
 */
import { Inject, Injectable } from '@nestjs/common';
import { LayerProgress, LIVE_JOB_PREDICATE, LIVE_JOB_STATUSES, Task, TaskJob, TaskJobKind, TaskJobStatus, WorkerQuantProgress } from '@inlaid/db';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource, EntityManager, In, IsNull, Not, Raw, Repository } from 'typeorm';
import { withTimeout } from '../common/with-timeout';
import { UNFINISHED } from './onboard-recovery';

export interface NewTaskJob {
  id: string;
  task: string;
  kind: TaskJobKind;
  status: TaskJobStatus;
  adapterPath: string | null;
  calibrationPath: string | null;
  slo: { ttft_ms?: number; tpot_ms?: number } | null;
  waitForQuantization: boolean;
  message: string;
}

const now = () => new Date().toISOString();

/** Removals of a failed task's upload directory that fail (EACCES, EBUSY) before the reconciliation pass gives it up. */
export const FILES_REMOVE_TRIES = 5;

/** What became of a failed task's upload directory (TaskStore.filesRemoved). */
export type FilesOutcome = { removed: true } | { refused: string } | { error: string };

/** create() of a live onboard/load job under a name that already has one (the partial unique index of task_jobs). */
export class TaskNameTaken extends Error {
  constructor(readonly task: string) {
    super(`task ${task} already has a live job`);
  }
}

/** First key of the task locks (Postgres advisory locks; the second key is hashtext(task name)). */
const TASK_LOCK_SPACE = 0x1a1d;
const LOCK_RETRY_MS = { first: 5, max: 100 };
/**
 * Added to locked()'s `queryMs` for the transaction's statement_timeout: the gateway's own bound (DbTimeout, the
 * connection dropped) comes first, Postgres's then cancels what still runs there.
 */
const STATEMENT_TIMEOUT_MARGIN_MS = 100;
/** The lock of a gateway's reconciliation pass (its own first key: never a task lock). */
const RECONCILE_LOCK = [0x1a1e, 1] as const;

/** A task lock another holder kept for longer than locked()'s `busyMs`: it only waited (Postgres answered). */
export class TaskLockBusy extends Error {
  constructor(readonly task: string) {
    super(`the lock of ${task} is held elsewhere`);
  }
}

/** A round trip to Postgres that did not answer in time (locked()'s `queryMs`, dbWithin). */
export class DbTimeout extends Error {}

/**
 * The COMMIT of a locked section that did not answer within `queryMs`: Postgres may have committed it or not. A caller
 * whose section writes must re-read what it wrote (under the lock) before it retries; one that only reads may retry.
 */
export class CommitOutcomeUnknown extends DbTimeout {}

export interface LockOptions {
  /** Give up on a lock held elsewhere after about this long (TaskLockBusy). */
  busyMs?: number;
  /**
   * The bound on each round trip of the lock's transaction (DbTimeout; CommitOutcomeUnknown for its COMMIT), and on
   * taking a pooled connection; Postgres enforces it too on each statement of the transaction (statement_timeout).
   */
  queryMs?: number;
  /** Stops the wait for the lock: rejects with its reason. */
  signal?: AbortSignal;
}

/** `p`, or DbTimeout past `ms` (a locked section bounds its own queries so; locked() then drops the connection). */
export function dbWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withTimeout(p, ms, () => new DbTimeout(`Postgres did not answer within ${ms} ms (${what})`));
}

/**
 * pg-pool's errors when its connectionTimeoutMillis passes: no pooled connection came free in time, or a new one did
 * not connect in time.
 */
function poolTimedOut(err: unknown): boolean {
  return err instanceof Error && /^(timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/.test(err.message);
}

function aborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted !== true) return;
  throw signal.reason instanceof Error ? signal.reason : new Error('the wait for the task lock was abandoned');
}

/** `column < now() - ms` in Postgres time (one clock for all gateways). */
const olderThan = (ms: number) => Raw((column) => `${column} < now() - (:ms * interval '1 millisecond')`, { ms });

@Injectable()
export class TaskStore {
  private tx: EntityManager | null = null;

  constructor(@Inject(DataSource) private readonly ds: DataSource) {}

  /** This store's reads and writes inside `em`'s transaction (a locked section's). */
  private static within(ds: DataSource, em: EntityManager): TaskStore {
    const store = new TaskStore(ds);
    store.tx = em;
    return store;
  }

  private get db(): DataSource | EntityManager {
    return this.tx ?? this.ds;
  }

  private get jobs(): Repository<TaskJob> {
    return this.db.getRepository(TaskJob);
  }

  get tasks(): Repository<Task> {
    return this.db.getRepository(Task);
  }

  /**
   * Runs `fn` holding the lock of the task name (a transaction-scoped advisory lock: a gateway that dies lets
   * go of it). `fn` reads and writes through the store it is given, in the lock's transaction: its writes
   * commit when the lock is released, or not at all if it throws. Waiting polls without holding a pooled
   * connection, so waiters cannot starve the holder of the one it uses.
   *
   * `opts` (the adapter catch-up's): `busyMs` gives up on a lock another holder keeps (TaskLockBusy: it only waited, at
   * least `busyMs`); `queryMs` bounds taking a connection from the pool and each round trip to Postgres (BEGIN, the
   * lock's try, COMMIT or ROLLBACK), and `fn` may bound its own with dbWithin: past it, DbTimeout (Postgres does not
   * answer, or a statement waits on another lock) and the connection is dropped rather than returned to the pool. The
   * server side is bounded by Postgres itself: the lock's transaction sets statement_timeout to `queryMs` (transaction-
   * local), so a statement still running there (blocked on a row or lock another connection holds) is cancelled within
   * about `queryMs` (plus STATEMENT_TIMEOUT_MARGIN_MS): the cancel aborts its transaction, which frees the task's lock
   * at once (a transaction-scoped advisory lock), while the session may stay open until Postgres next writes to the
   * closed socket and ends the backend (closing the socket alone frees nothing: Postgres only notices it when it next
   * reads or writes). Taking a pooled connection is bounded by `queryMs` or the pool's own connectionTimeoutMillis,
   * whichever is shorter: both are a DbTimeout. A COMMIT without an answer throws CommitOutcomeUnknown (it may have
   * committed): a caller whose section writes re-reads before it retries. `signal` stops the wait (checked before each try and each pause, and
   * before `fn` runs) and rejects with its reason.
   */
  async locked<T>(task: string, fn: (store: TaskStore) => Promise<T>, opts: LockOptions = {}): Promise<T> {
    if (this.tx !== null) throw new Error(`the lock of ${task} is taken inside another locked section`);
    const start = Date.now();
    for (let pause = LOCK_RETRY_MS.first; ; pause = Math.min(2 * pause, LOCK_RETRY_MS.max)) {
      aborted(opts.signal);
      const out = await this.tryLocked(task, fn, opts);
      if (out !== null) return out.value;
      const elapsed = Date.now() - start;
      if (opts.busyMs !== undefined && elapsed >= opts.busyMs) throw new TaskLockBusy(task);
      aborted(opts.signal);
      const wait = opts.busyMs === undefined ? pause : Math.max(1, Math.min(pause, opts.busyMs - elapsed)); // the last try at busyMs
      await sleep(wait, undefined, { signal: opts.signal }).catch(() => aborted(opts.signal));
    }
  }

  /** The pool's own bound on handing over a connection (pg-pool's connectionTimeoutMillis), if it has one. */
  private poolTimeoutMs(): number | undefined {
    const ms = (this.ds.driver as unknown as { master?: { options?: { connectionTimeoutMillis?: number } } }).master?.options?.connectionTimeoutMillis;
    return typeof ms === 'number' && ms > 0 ? ms : undefined;
  }

  /** One try of locked(): `fn`'s value, or null when another holder has the lock. */
  private async tryLocked<T>(task: string, fn: (store: TaskStore) => Promise<T>, opts: LockOptions): Promise<{ value: T } | null> {
    const qr = this.ds.createQueryRunner();
    const bound = <R>(p: Promise<R>, what: string): Promise<R> => (opts.queryMs === undefined ? p : dbWithin(p, opts.queryMs, what));
    let broken: DbTimeout | null = null;
    const connecting = qr.connect();
    // the pool gives up on its own after its connectionTimeoutMillis (5 s: data-source.ts): the bound is whichever is
    // shorter, and both are a DbTimeout (Postgres, or the pool's connections, did not answer), not one task's failure
    const poolMs = this.poolTimeoutMs();
    try {
      await bound(connecting, 'a pooled connection');
    } catch (err) {
      // a connection the pool hands over later goes back to it at once
      if (err instanceof DbTimeout) void connecting.then(() => qr.release(), () => undefined);
      else await qr.release();
      if (!(err instanceof DbTimeout) && poolTimedOut(err)) {
        throw new DbTimeout(`no pooled connection within ${poolMs ?? '?'} ms (the pool's connectionTimeoutMillis): ${(err as Error).message}`);
      }
      throw err;
    }
    try {
      await bound(qr.startTransaction(), 'BEGIN');
      // Postgres bounds each statement of the transaction itself (transaction-local): one blocked on a lock is
      // cancelled, so a dropped connection's backend ends and lets go of the task's lock (see locked())
      const lockTry = opts.queryMs === undefined
        ? qr.query('SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS taken', [TASK_LOCK_SPACE, task])
        : qr.query("SELECT set_config('statement_timeout', $3, true), pg_try_advisory_xact_lock($1, hashtext($2)) AS taken", [TASK_LOCK_SPACE, task, `${Math.ceil(opts.queryMs) + STATEMENT_TIMEOUT_MARGIN_MS}ms`]);
      const [row] = (await bound(lockTry, "the task's lock")) as Array<{ taken: boolean }>;
      if (row?.taken !== true || opts.signal?.aborted === true) {
        await bound(qr.commitTransaction(), 'COMMIT'); // nothing written: its outcome does not matter
        aborted(opts.signal);
        return null;
      }
      let value: T;
      try {
        value = await fn(TaskStore.within(this.ds, qr.manager));
      } catch (err) {
        if (!(err instanceof DbTimeout)) {
          await bound(qr.rollbackTransaction(), 'ROLLBACK').catch((e: unknown) => {
            if (e instanceof DbTimeout) throw e; // else (as a transaction's): `fn`'s error is the one to report
          });
        }
        throw err;
      }
      await bound(qr.commitTransaction(), 'COMMIT').catch((e: unknown) => {
        if (e instanceof DbTimeout) throw new CommitOutcomeUnknown(`${e.message}: the section's writes may or may not have committed`);
        throw e;
      });
      return { value };
    } catch (err) {
      if (err instanceof DbTimeout) broken = err;
      throw err;
    } finally {
      // a round trip that did not answer is still under way on the connection: drop it rather than hand it back to
      // the pool in its transaction (statement_timeout ends a statement still running there; locked())
      if (broken === null) {
        // BEGIN or the lock's try failed (a query error): end the transaction before the connection goes back to the pool
        const rolledBack = !qr.isTransactionActive || (await bound(qr.rollbackTransaction(), 'ROLLBACK').then(() => true, () => false));
        if (rolledBack) await qr.release();
        else void (qr as unknown as { releasePostgresConnection(err: Error): Promise<void> }).releasePostgresConnection(new Error('its ROLLBACK failed'));
      } else void (qr as unknown as { releasePostgresConnection(err: Error): Promise<void> }).releasePostgresConnection(broken);
    }
  }

  /**
   * Runs `fn` holding the reconciliation lock (transaction-scoped advisory lock, released if the gateway dies),
   * or returns null at once when another gateway holds it: one gateway reconciles at a time. `fn` uses the
   * store normally (the lock's connection only holds the lock), so a pass holds one pooled connection for as
   * long as it runs, and a second while it records a failure (a locked section across a worker unload):
   * INLAID_DB_POOL is at least 3 (MIN_DB_POOL, gateway-config.ts) so that a step or DELETE still gets one.
   */
  async reconciling<T>(fn: () => Promise<T>): Promise<T | null> {
    if (this.tx !== null) throw new Error('reconciling inside a locked section');
    return this.ds.transaction(async (em) => {
      const [row] = (await em.query('SELECT pg_try_advisory_xact_lock($1, $2) AS taken', [...RECONCILE_LOCK])) as Array<{ taken: boolean }>;
      return row?.taken === true ? fn() : null;
    });
  }

  /**
   * Inserts a job, or throws TaskNameTaken when it would be a second live onboard/load job of its task: the
   * insert skips a row that conflicts with the partial unique index of task_jobs (migration 1764600000000),
   * waiting for a concurrent insert of the name to commit or roll back first.
   */
  async create(j: NewTaskJob): Promise<TaskJob> {
    const { message, ...fields } = j;
    const row = this.jobs.create({ ...fields, progress: { stages: {}, layers: [] }, history: [{ at: now(), status: j.status, message }], error: null, checkpointVersion: null });
    const out = await this.jobs
      .createQueryBuilder()
      .insert()
      .values(row)
      .onConflict(`("task") WHERE ${LIVE_JOB_PREDICATE} DO NOTHING`) // only this index's conflict is a taken name
      .returning('id')
      .execute();
    if ((out.raw as unknown[]).length === 0) throw new TaskNameTaken(j.task);
    return this.jobs.findOneByOrFail({ id: j.id });
  }

  /** Drops a row that never became a task (its flow could not be enqueued). */
  async remove(id: string): Promise<void> {
    await this.jobs.delete({ id });
  }

  get(id: string): Promise<TaskJob | null> {
    return this.jobs.findOneBy({ id });
  }

  /**
   * The task's live onboard/load job if it has one, else its most recent one (deletes are bookkeeping rows). A
   * refusal recorded while a concurrent creation of the name went live is newer but must not hide the live job.
   */
  async latest(task: string): Promise<TaskJob | null> {
    const kind = In(['onboard', 'load']);
    const live = await this.jobs.findOne({ where: { task, kind, status: In([...LIVE_JOB_STATUSES]) }, order: { createdAt: 'DESC' } });
    return live ?? this.jobs.findOne({ where: { task, kind }, order: { createdAt: 'DESC' } });
  }

  history(task: string): Promise<TaskJob[]> {
    return this.jobs.find({ where: { task }, order: { createdAt: 'ASC' } });
  }

  async listLatest(): Promise<TaskJob[]> {
    const rows = await this.jobs.find({ where: { kind: In(['onboard', 'load']) }, order: { createdAt: 'ASC' } });
    const byTask = new Map<string, TaskJob>();
    const live = (r: TaskJob | undefined): boolean => r !== undefined && LIVE_JOB_STATUSES.includes(r.status);
    for (const r of rows) if (live(r) || !live(byTask.get(r.task))) byTask.set(r.task, r); // as latest(): live first
    return [...byTask.values()].sort((a, b) => a.task.localeCompare(b.task));
  }

  /** Live onboard / load jobs that name an adapter (what a worker that comes up may lack: missing-adapters.ts). */
  liveWithAdapter(): Promise<TaskJob[]> {
    return this.jobs.find({ where: { kind: In(['onboard', 'load']), status: In([...LIVE_JOB_STATUSES]), adapterPath: Not(IsNull()) } });
  }

  /** Onboardings waiting for (or in) a re-quantization that has not published them yet: the next batch. */
  pendingQuantization(): Promise<TaskJob[]> {
    return this.jobs.find({ where: { kind: 'onboard', status: 'quantizing', checkpointVersion: IsNull() }, order: { createdAt: 'ASC' } });
  }

  /** Onboardings not ended yet (their flows have steps left), oldest first; with `olderThanMs`, only rows created longer ago than that. */
  unfinishedOnboardings(olderThanMs?: number): Promise<TaskJob[]> {
    const createdAt = olderThanMs === undefined ? {} : { createdAt: olderThan(olderThanMs) };
    return this.jobs.find({ where: { kind: 'onboard', status: In([...UNFINISHED]), ...createdAt }, order: { createdAt: 'ASC' } });
  }

  /**
   * Onboardings whose upload directory the reconciliation pass may remove, last written longer than
   * `olderThanMs` ago (oldest first: a row whose removal failed was just written, so it goes to the back):
   * failed ones, and deleted ones that failed while a re-quantization might read their files (filesPending,
   * left by DELETE to this pass); not those removed, refused, or given up after FILES_REMOVE_TRIES errors.
   */
  failedWithFiles(olderThanMs: number, limit = 100): Promise<TaskJob[]> {
    const open = (p: string) => `${p} ->> 'filesRemovedAt' IS NULL AND ${p} ->> 'filesRefused' IS NULL AND COALESCE((${p} #>> '{filesRemoveError,tries}')::int, 0) < ${FILES_REMOVE_TRIES}`;
    const base = { kind: 'onboard' as const, updatedAt: olderThan(olderThanMs) };
    return this.jobs.find({
      where: [
        { ...base, status: 'failed', progress: Raw(open) },
        { ...base, status: 'deleted', progress: Raw((p) => `${open(p)} AND (${p} ->> 'filesPending') = 'true'`) },
      ],
      order: { updatedAt: 'ASC' },
      take: limit,
    });
  }

  /**
   * Records what became of a failed task's upload directory: removed, refused for good (failedWithFiles skips
   * the row from then on), or an error (counted; the write moves the row to the back, and after
   * FILES_REMOVE_TRIES errors it is given up). Only on a failed row, or a deleted one left to the reconciliation
   * pass (filesPending): another row is left alone.
   */
  filesRemoved(id: string, outcome: FilesOutcome = { removed: true }): Promise<TaskJob> {
    return this.update(id, (j) => {
      if (j.status !== 'failed' && !(j.status === 'deleted' && j.progress.filesPending === true)) return;
      if ('refused' in outcome) j.progress = { ...j.progress, filesRefused: outcome.refused };
      else if ('error' in outcome) j.progress = { ...j.progress, filesRemoveError: { tries: (j.progress.filesRemoveError?.tries ?? 0) + 1, last: outcome.error, at: now() } };
      else j.progress = { ...j.progress, filesRemovedAt: now() };
    });
  }

  /**
   * Task names in the batch of a re-quantization that may be under way: the `progress.batch` of onboardings
   * still quantizing without a checkpoint (a run writes it on its rows when it starts: stageStarted; layerDone
   * again). Such a run may read these tasks' files (when it starts, and again on a takeover).
   */
  async namesInRunningBatches(): Promise<Set<string>> {
    const names = new Set<string>();
    for (const j of await this.pendingQuantization()) for (const n of j.progress.batch ?? []) names.add(n);
    return names;
  }

  pendingRemovals(): Promise<TaskJob[]> {
    return this.jobs.find({ where: { kind: 'delete', status: 'queued' }, order: { createdAt: 'ASC' } });
  }

  /**
   * Read-modify-write of one row with the row locked (SELECT ... FOR UPDATE) until the write commits: two
   * writers never start from the same state, so neither undoes the other (a progress write during a DELETE
   * would otherwise put back the status the DELETE replaced; save() writes every column that differs).
   */
  async update(id: string, change: (j: TaskJob) => void): Promise<TaskJob> {
    const write = async (em: EntityManager): Promise<TaskJob> => {
      const jobs = em.getRepository(TaskJob);
      const j = await jobs.findOneOrFail({ where: { id }, lock: { mode: 'pessimistic_write' } });
      change(j);
      return jobs.save(j);
    };
    return this.tx !== null ? write(this.tx) : this.ds.transaction(write);
  }

  transition(id: string, status: TaskJobStatus, message: string, extra: (j: TaskJob) => void = () => undefined): Promise<TaskJob> {
    return this.update(id, (j) => {
      extra(j);
      if (j.status !== status) j.history = [...j.history, { at: now(), status, message }];
      j.status = status;
    });
  }

  /**
   * Records the job's adapter content digest (null: unknown), what the adapter catch-up compares each worker's with:
   * first that of the files its validate step read (ValidateAdapter's card), the job's reference until its load (what
   * the load step checks workers that already hold the name against), then that of what its load (or activate) step,
   * or a vLLM-style load, loaded onto the workers (WorkerAdminService.loadEverywhere, job-digest.ts).
   */
  recordAdapterDigest(id: string, digest: string | null): Promise<TaskJob> {
    return this.update(id, (j) => {
      j.adapterDigest = digest;
    });
  }

  /** `batch`: the task names of the re-quantization run that starts (progress.batch, namesInRunningBatches). */
  stageStarted(id: string, stage: string, batch?: string[]): Promise<TaskJob> {
    return this.update(id, (j) => {
      const s = j.progress.stages[stage];
      if (s?.status === 'done') return;
      j.progress = { ...j.progress, stages: { ...j.progress.stages, [stage]: { status: 'running', startedAt: s?.startedAt ?? now() } }, ...(batch === undefined ? {} : { batch }) };
    });
  }

  stageFinished(id: string, stage: string, status: 'done' | 'skipped' | 'failed', message?: string): Promise<TaskJob> {
    return this.update(id, (j) => {
      const s = j.progress.stages[stage];
      if (s?.status === 'done') return;
      const startedAt = s?.startedAt ?? now();
      const finishedAt = now();
      const seconds = (Date.parse(finishedAt) - Date.parse(startedAt)) / 1000;
      j.progress = { ...j.progress, stages: { ...j.progress.stages, [stage]: { status, startedAt, finishedAt, seconds, ...(message ? { message } : {}) } } };
    });
  }

  async layerDone(ids: readonly string[], layer: LayerProgress, batch: string[]): Promise<void> {
    for (const id of ids) {
      await this.update(id, (j) => {
        const layers = j.progress.layers.filter((l) => l.layer !== layer.layer);
        j.progress = { ...j.progress, layers: [...layers, layer].sort((a, b) => a.layer - b.layer), batch };
      });
    }
  }

  /** Records where one worker is in a shared re-quantization; the latest quantizer to start the run is `quantizer`. */
  async workerProgress(ids: readonly string[], addr: string, next: (prev: WorkerQuantProgress | undefined) => WorkerQuantProgress | null): Promise<void> {
    for (const id of ids) {
      await this.update(id, (j) => {
        const entry = next(j.progress.workers?.[addr]);
        if (entry === null) return;
        const workers = { ...(j.progress.workers ?? {}), [addr]: entry };
        j.progress = { ...j.progress, workers, ...(entry.role === 'quantizer' && entry.stage === 'planned' ? { quantizer: addr } : {}) };
      });
    }
  }

  /** Marks the job failed; `filesPending`: a re-quantization may read its files, the reconciliation pass removes them (task-files.ts). */
  async fail(id: string, stage: string, reason: string, opts: { filesPending?: boolean } = {}): Promise<TaskJob> {
    await this.stageFinished(id, stage, 'failed', reason);
    const j = await this.transition(id, 'failed', `${stage}: ${reason}`, (row) => {
      row.error = `${stage}: ${reason}`;
      if (opts.filesPending === true) row.progress = { ...row.progress, filesPending: true };
    });
    await this.tasks.update({ name: j.task }, { status: 'failed' });
    return j;
  }

  /**
   * The task's row, with its SLO targets (`slo` of POST /v1/tasks; none = the defaults): the scheduler plans the task
   * against them (scheduling/task-slo-sync.ts) and the dashboard judges its requests against them.
   */
  async upsertTask(name: string, adapterLocation: string | null, rank: number, targetModules: string[], status: Task['status'], slo: NewTaskJob['slo']): Promise<void> {
    const targets = { sloTtftMs: slo?.ttft_ms ?? null, sloTpotMs: slo?.tpot_ms ?? null };
    await this.tasks.upsert({ name, adapterLocation, rank, targetModules, status, ...targets }, { conflictPaths: ['name'] });
  }
}
