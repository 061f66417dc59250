/**
 * What each onboarding step does (called by the BullMQ processors in onboard-queues.service.ts). Every step
 * first reads its task_jobs row: a step already done, or a task deleted/failed meanwhile, is a no-op, so a
 * step re-run after a gateway restart resumes instead of repeating work.
 *
 * A DELETE may land while a step runs. What loads the adapter on the workers, and every status write of a
 * step, happens under the task's lock (TaskStore.locked), which DELETE takes too (tasks.service.ts), after
 * re-reading the row there: a step either finishes before the DELETE (which then unloads what it loaded) or
 * finds the task deleted and loads and writes nothing. Workers know an adapter by its task name only, so
 * nothing unloads a name outside that lock either (failAndUnload): a late unload could hit a new task that
 * took the name. The validate step records on the row the digest of the files the worker validated, and a step that
 * loads the adapter the digest of what the workers loaded (task_jobs.adapter_digest, job-digest.ts: the adapter
 * catch-up compares it with each worker's); a worker that holds an older job's adapter under the task's name (its link
 * was down while the task was deleted and its files rewritten in place) is unloaded by the validate step and replaced
 * by the load (WorkerAdminService.unloadOthers, loadEverywhere). A worker never unloads an adapter with requests in
 * flight: a step whose unload a worker refused so runs that worker's adapter catch-up again once its writes are
 * committed (AdapterCatchUp.recheck), which holds the name there (no new request goes to the old adapter, so those in
 * flight drain) and retries the unload with its backoff. The validate step goes on (best effort); the load (or
 * activate) step fails ABORTED (UnloadFailed), which the queue retries (30 tries, 1 s apart), until the old adapter
 * is gone; requests that outlast those tries fail the onboarding. failAndUnload tries every worker and leaves one
 * that refused to that catch-up.
 */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { TaskJob } from '@inlaid/db';
import type { OnboardStep } from '@inlaid/jobs';
import { worker } from '@inlaid/proto';
import type { GatewayConfig } from '@inlaid/config';
import { existsSync } from 'node:fs';
import { InlaidError } from '../common/inlaid-error';
import { asDigest } from '../workers/adapter-digest';
import { GATEWAY_CONFIG } from '../config/config.module';
import { completedRemovals, freedOnboardings, freesAtFailure, removalsFirst, removeTaskUploadDir, UnsafeRemoval } from './task-files';
import { workerQuantProgress } from './worker-quant-progress';
import { FILES_REMOVE_TRIES, TaskStore } from './task-store.service';
import { AdapterCatchUp } from './adapter-catch-up.service';
import { UnloadFailed, WorkerAdminService, WorkerRole } from './worker-admin.service';

export class StepFailed extends Error {}

export interface StepContext {
  /** job.updateData (progress visible in BullMQ). */
  report(data: Record<string, unknown>): Promise<void>;
}

const FINAL = new Set(['failed', 'deleted']);

@Injectable()
export class OnboardSteps {
  private readonly logger = new Logger('Onboard');

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(TaskStore) private readonly store: TaskStore,
    @Inject(WorkerAdminService) private readonly admin: WorkerAdminService,
    /** Asked to look again at a worker that refused to unload an adapter in use (recheck). */
    @Inject(AdapterCatchUp) private readonly catchUp: AdapterCatchUp,
  ) {}

  /** `step`'s result; a worker that refused to unload an adapter in use (UnloadFailed) is rechecked before it throws. */
  private async rechecking(step: Promise<string>): Promise<string> {
    try {
      return await step;
    } catch (err) {
      if (err instanceof UnloadFailed) this.catchUp.recheck(err.inUse);
      throw err;
    }
  }

  async run(step: OnboardStep, taskJobId: string, ctx: StepContext): Promise<string> {
    const job = await this.store.get(taskJobId);
    if (job === null) return 'task job gone';
    if (FINAL.has(job.status)) {
      if (step === 'activate' && job.status === 'failed') throw new StepFailed(job.error ?? 'failed');
      return `skipped: task ${job.status}`;
    }
    if (job.progress.stages[step]?.status === 'done' || job.progress.stages[step]?.status === 'skipped') return 'already done';
    await this.store.stageStarted(taskJobId, step);
    switch (step) {
      case 'validate':
        return this.validate(job);
      case 'load':
        return this.load(job);
      case 'requantize':
        return this.requantize(job, ctx);
      case 'activate':
        return this.activate(job);
    }
  }

  private async validate(job: TaskJob): Promise<string> {
    const card = await this.admin.validate(job.task, job.adapterPath ?? '');
    const digest = asDigest(card.digest) ?? null; // of the files validated (null: an older worker)
    let inUse: readonly string[] = [];
    try {
      return await this.whileLive(job, async (tx) => {
        // checked here: a DELETE during the validation removes the files of the task it deletes (tasks.service.ts)
        if (job.calibrationPath !== null && !existsSync(job.calibrationPath)) throw new StepFailed(`calibration file ${job.calibrationPath} is gone`);
        await tx.recordAdapterDigest(job.id, digest); // the validated files'
        // a worker still serving an older job's adapter under the name stops now, not at the load step (best effort)
        if (digest !== null && job.adapterPath !== null) ({ inUse } = await this.admin.unloadOthers(job.task, job.adapterPath, digest));
        await tx.upsertTask(job.task, job.adapterPath, card.rank, card.targetModules, 'registered', job.slo);
        await tx.stageFinished(job.id, 'validate', 'done');
        await tx.transition(job.id, job.waitForQuantization ? 'quantizing' : 'loading', `validated (rank ${card.rank})`);
        return 'valid';
      });
    } finally {
      // those whose old adapter has requests in flight: their catch-up, reading the digest now committed, holds the
      // name there (so they drain) and unloads it once they have
      this.catchUp.recheck(inUse);
    }
  }

  private load(job: TaskJob): Promise<string> {
    return this.rechecking(this.whileLive(job, async (tx) => {
      await tx.recordAdapterDigest(job.id, await this.admin.loadEverywhere(job.task, job.adapterPath ?? '', { validated: job.adapterDigest }));
      await tx.tasks.update({ name: job.task }, { status: 'serving' });
      await tx.stageFinished(job.id, 'load', 'done');
      await tx.transition(job.id, 'quantizing', 'adapter serving on the current base; waiting for re-quantization');
      return 'loaded';
    }));
  }

  /**
   * Runs `fn` under the task's lock if the task is still live there (not deleted or failed since the step
   * read it); `fn` writes through the store it is given. A deleted task's step loads and writes nothing.
   */
  private whileLive(job: TaskJob, fn: (tx: TaskStore) => Promise<string>, failedThrows = false): Promise<string> {
    return this.store.locked(job.task, async (tx) => {
      const row = await tx.get(job.id);
      if (row === null) return 'task job gone';
      if (failedThrows && row.status === 'failed') throw new StepFailed(row.error ?? 'failed');
      return FINAL.has(row.status) ? `skipped: task ${row.status} meanwhile` : fn(tx);
    });
  }

  private async requantize(job: TaskJob, ctx: StepContext): Promise<string> {
    if (job.checkpointVersion !== null) {
      await this.store.stageFinished(job.id, 'requantize', 'done');
      return 'already in a published checkpoint';
    }
    const batch = (await this.store.pendingQuantization()).filter((j) => j.calibrationPath !== null && j.adapterPath !== null);
    const names = batch.map((j) => j.task);
    const removals = removalsFirst(await this.store.pendingRemovals(), names);
    // the batch is on its rows before the run reads any file: the reconciliation pass keeps these tasks' files
    // (namesInRunningBatches); a task failing after this read is failed too recently for the TTL to have passed
    for (const b of batch) await this.store.stageStarted(b.id, 'requantize', names);
    const add = batch.map((j) => ({ name: j.task, adapterPath: j.adapterPath as string, calibrationPath: j.calibrationPath as string }));
    let done: worker.RequantizeProgress;
    const ids = batch.map((b) => b.id);
    // The quantizer's and the followers' streams report concurrently; their row updates are read-modify-write,
    // so they go through one queue (else one overwrites another's progress).
    let writes: Promise<void> = Promise.resolve();
    const record = async (p: worker.RequantizeProgress, addr: string, role: WorkerRole) => {
      await this.store.workerProgress(ids, addr, (prev) => workerQuantProgress(p, role, prev));
      if (role !== 'quantizer' || p.stage !== worker.RequantizeProgress_Stage.STAGE_LAYER) return;
      const layer = { layer: p.layer, numLayers: p.numLayers, hessianSeconds: p.hessianSeconds, swapSeconds: p.swapSeconds, at: new Date().toISOString() };
      await this.store.layerDone(ids, layer, names);
      await ctx.report({ layersDone: p.layer + 1, numLayers: p.numLayers, batch: names });
    };
    try {
      if (removals.first.length > 0) await this.completeRemovals(removals.first, await this.admin.requantize([], removals.first.map((r) => r.task), async () => undefined));
      done = await this.admin.requantize(add, removals.rest.map((r) => r.task), (p, addr, role) => {
        const next = writes.then(() => record(p, addr, role));
        writes = next.catch(() => undefined);
        return next;
      });
      await writes;
    } catch (err) {
      await writes;
      if (err instanceof InlaidError && err.status === status.FAILED_PRECONDITION) {
        for (const b of batch) await this.store.stageFinished(b.id, 'requantize', 'skipped', err.message);
        return 'skipped: no quantized checkpoint on the workers';
      }
      if (err instanceof InlaidError && (err.status === status.INTERNAL || err.status === status.INVALID_ARGUMENT)) {
        const ended = await this.endedMeanwhile(batch);
        if (ended.length > 0) {
          // its files may be gone (a DELETE or the failure's clean-up removes them): the others are not at fault,
          // and the retry reads the batch again without it (pendingQuantization)
          throw new InlaidError(status.ABORTED, `re-quantization failed after [${ended.join(', ')}] was deleted or failed; retrying without it (${err.message})`);
        }
        for (const b of batch) if (b.id !== job.id) await this.failAndUnload(b, 'requantize', err.message);
        throw new StepFailed(err.message);
      }
      throw err; // UNAVAILABLE / ABORTED (another run in progress): retried by BullMQ
    }
    for (const b of batch) {
      await this.store.update(b.id, (j) => (j.checkpointVersion = done.checkpointVersion));
      await this.store.stageFinished(b.id, 'requantize', 'done');
    }
    await this.completeRemovals(removals.rest, done);
    this.logger.log(`checkpoint v${done.checkpointVersion} serving; added [${names.join(', ')}]`);
    await ctx.report({ checkpointVersion: done.checkpointVersion, batch: names });
    return `checkpoint v${done.checkpointVersion}`;
  }

  /** The removals a published version completes (task-files.ts), and the files they free. */
  private async completeRemovals(removals: readonly TaskJob[], done: worker.RequantizeProgress): Promise<void> {
    for (const r of completedRemovals(removals, done.tasks)) {
      await this.store.transition(r.id, 'completed', `dropped from checkpoint v${done.checkpointVersion}`);
      await this.freeFiles(r);
    }
  }

  /**
   * Tasks of a batch deleted or failed since the batch was read (it held only quantizing rows). A row failed
   * meanwhile (its own flow's step, or another gateway's run of an overlapping batch failing it) is no more at
   * fault than a deleted one; if the failure was the run's own, the retry without it fails again and then
   * fails the rest.
   */
  private async endedMeanwhile(batch: readonly TaskJob[]): Promise<string[]> {
    const now = await Promise.all(batch.map(async (b) => ({ task: b.task, row: await this.store.get(b.id) })));
    return now.filter(({ row }) => row === null || FINAL.has(row.status)).map(({ task }) => task);
  }

  /** A removal done: the upload directories of the task's deleted onboardings go (task-files.ts says why now). */
  private async freeFiles(removal: TaskJob): Promise<void> {
    for (const j of freedOnboardings(await this.store.history(removal.task), removal)) {
      await removeTaskUploadDir(this.config.tasks.dataDir, j.task, j.id).catch((err: unknown) => this.logger.warn(`remove the files of ${j.task} (${j.id}): ${String(err)}`));
    }
  }

  /**
   * Removes a failed task's upload directory (task-files.ts says when) and records it on the row; the row
   * keeps the reason and the paths. Idempotent. A refused removal (UnsafeRemoval) is recorded and never tried
   * again; another failure (e.g. EACCES, EBUSY) is counted on the row (progress.filesRemoveError) and left for
   * a later reconciliation pass, which gives it up after FILES_REMOVE_TRIES (task-store.service.ts). Returns
   * whether the directory is gone.
   */
  async freeFailedFiles(job: Pick<TaskJob, 'id' | 'task'>): Promise<boolean> {
    try {
      await removeTaskUploadDir(this.config.tasks.dataDir, job.task, job.id);
    } catch (err) {
      this.logger.warn(`remove the files of failed task ${job.task} (${job.id}): ${String(err)}`);
      const row = await this.store.filesRemoved(job.id, err instanceof UnsafeRemoval ? { refused: err.message } : { error: String(err) });
      const tries = row.progress.filesRemoveError?.tries ?? 0;
      if (tries >= FILES_REMOVE_TRIES) this.logger.error(`giving up removing the files of failed task ${job.task} (${job.id}) after ${tries} tries: ${row.progress.filesRemoveError?.last ?? ''}`);
      return false;
    }
    await this.store.filesRemoved(job.id);
    return true;
  }

  private activate(job: TaskJob): Promise<string> {
    return this.rechecking(this.whileLive(job, async (tx) => {
      if (job.waitForQuantization) await tx.recordAdapterDigest(job.id, await this.admin.loadEverywhere(job.task, job.adapterPath ?? '', { validated: job.adapterDigest }));
      await tx.tasks.update({ name: job.task }, { status: 'serving' });
      await tx.stageFinished(job.id, 'activate', 'done');
      const fresh = await tx.get(job.id);
      const version = fresh?.checkpointVersion ?? null;
      await tx.transition(job.id, 'active', version === null ? 'active on the current base' : `active on checkpoint v${version}`);
      return 'active';
    }, true));
  }

  /**
   * Stops serving the task's adapter (best effort), then marks the task failed with the reason: a client that
   * reads `failed` never races a request against the unload. Under the task's lock, and only if the task is
   * still live there: a task deleted meanwhile was unloaded by its DELETE, and its name may be a new task's.
   * Once the failure is written, a task that never got into a re-quantization loses its upload directory
   * (freesAtFailure, task-files.ts); the others are marked filesPending and theirs go later (OnboardQueues'
   * reconciliation, after the TTL), also if the task is deleted meanwhile (tasks.service.ts delete()).
   */
  async failAndUnload(job: TaskJob, stage: string, reason: string): Promise<void> {
    let inUse: readonly string[] = [];
    const freeNow = await this.store.locked(job.task, async (tx) => {
      const row = await tx.get(job.id);
      if (row === null || FINAL.has(row.status)) return false;
      // every worker is tried (a failure on one leaves the others unloaded); one whose adapter has requests in flight
      // keeps it until its catch-up, rechecked once the failure is committed, unloads it (held there meanwhile)
      await this.admin.unloadEverywhere(job.task).catch((err: unknown) => {
        if (err instanceof UnloadFailed) inUse = err.inUse;
        this.logger.warn(`unload ${job.task} after failure: ${String(err)}`);
      });
      const freeAtOnce = freesAtFailure(row); // the state it failed in, read under the lock
      await tx.fail(job.id, stage, reason, { filesPending: !freeAtOnce });
      return freeAtOnce;
    }).finally(() => this.catchUp.recheck(inUse));
    // a store write that throws here must not replace the step's failure: the row has no filesRemovedAt, so a
    // reconciliation pass tries again (failedWithFiles)
    if (freeNow) await this.freeFailedFiles(job).catch((err: unknown) => this.logger.warn(`recording the removal of the files of failed task ${job.task} (${job.id}): ${String(err)}; a reconciliation pass retries it`));
  }
}
