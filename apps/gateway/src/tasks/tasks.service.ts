/**
 * Task operations behind both APIs (HTTP and gRPC): onboard (202 + a BullMQ flow), list, get, delete, and
 * the vLLM-style load/unload that serve an adapter at once without calibration data.
 */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { LIVE_JOB_STATUSES, type TaskJob } from '@inlaid/db';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { asDigest } from '../workers/adapter-digest';
import { WorkersService } from '../workers/workers.service';
import { AdapterCatchUp } from './adapter-catch-up.service';
import { resolveAdapterPath } from './adapter-location';
import { checkCalibration } from './calibration';
import { OnboardQueues } from './onboard-queues.service';
import { checkTaskName, CreateTaskInput, parseCreateTask } from './task-input';
import { dropsAtNextVersion, JobState, removeTaskUploadDir, taskUploadDir } from './task-files';
import { NewTaskJob, TaskNameTaken, TaskStore } from './task-store.service';
import { taskView, TaskViewJson } from './task-view';
import { checkAdapterFiles, newFileId, pickAdapterFiles, UploadedFile, UploadedFiles, writeAdapter, writeText } from './uploads';
import { UnloadFailed, WorkerAdminService } from './worker-admin.service';

/** The statuses of a job whose task holds its name (also frozen in the task_jobs migration 1764600000000). */
const LIVE = new Set<string>(LIVE_JOB_STATUSES);
/** A removed task's row: its targets go with it, so the name served again (a worker's own adapter, a vLLM-style load) has none. */
const UNLOADED = { status: 'unloaded', sloTtftMs: null, sloTpotMs: null } as const;

/**
 * A DELETE's or unload's ABORTED (409, "retry when they finish"; the transaction rolled back) when a worker that refused
 * the unload because of requests in flight holds the adapter of its own (its --adapters-dir, a checkpoint: no
 * LoadAdapter path reported): its catch-up unloads only what LoadAdapter loaded (catchUpAction), so it would serve the
 * name for good after a success. `unloaded`: the other workers, which did unload it (their catch-up loads a served
 * job's adapter back once rolled back).
 */
class OwnAdapterInUse extends InlaidError {
  constructor(name: string, param: string, cause: UnloadFailed, readonly unloaded: readonly string[]) {
    super(status.ABORTED, `The task \`${name}\` has requests in flight; retry when they finish. (${cause.message})`, { param });
    this.name = 'OwnAdapterInUse';
  }
}

const taskExists = (name: string) => new InlaidError(status.ALREADY_EXISTS, `A task named \`${name}\` already exists.`, { param: 'name', code: 'task_exists' });

@Injectable()
export class TasksService {
  private readonly logger = new Logger('Tasks');

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(TaskStore) private readonly store: TaskStore,
    @Inject(WorkerAdminService) private readonly admin: WorkerAdminService,
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(OnboardQueues) private readonly queues: OnboardQueues,
    /** Asked to look again at a worker that refused to unload an adapter in use (loadLora, delete, unloadLora). */
    @Inject(AdapterCatchUp) private readonly catchUp: AdapterCatchUp,
  ) {}

  /**
   * Onboards a task (202). A refusal leaves nothing behind: no file under INLAID_DATA_DIR/tasks and no
   * row, except that a refused adapter (not safetensors, wrong shapes/rank/base, outside the roots) is kept
   * as a `failed` task_jobs row on purpose, so GET /v1/tasks/{name} shows why; the name stays reusable.
   * Order: request shape, duplicate name and calibration (nothing written yet), then the adapter. Concurrent
   * creations of one new name can all pass the duplicate check; the row insert lets one through (a partial
   * unique index of task_jobs) and the others are refused the same way, their files removed.
   */
  async create(body: unknown, files: UploadedFiles = {}): Promise<{ job_id: string; task: TaskViewJson }> {
    const upload = pickAdapterFiles(files);
    const calibrationFile = files['calibration_file']?.[0];
    const input = parseCreateTask(body, { adapter: upload !== null, calibration: calibrationFile !== undefined });
    await this.refuseDuplicate(input.name);
    const calibration = await this.readCalibration(input, calibrationFile);
    const id = randomUUID();
    const dir = taskUploadDir(this.config.tasks.dataDir, input.name, id);
    let fields: Omit<NewTaskJob, 'status' | 'message'> = { id, task: input.name, kind: 'onboard', adapterPath: null, calibrationPath: null, slo: input.slo, waitForQuantization: input.waitForQuantization };
    try {
      const adapterPath = upload !== null ? await writeAdapter(join(dir, 'adapter'), checkAdapterFiles(upload)) : await resolveAdapterPath(input.adapterPath ?? '', this.config.tasks.adapterRoots);
      fields = { ...fields, adapterPath };
      if (this.workers.acceptingConnections().length > 0) await this.admin.validate(input.name, adapterPath);
      fields = { ...fields, calibrationPath: 'text' in calibration ? await writeText(join(dir, 'calibration.jsonl'), calibration.text) : calibration.path };
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if (err instanceof InlaidError && err.status === status.INVALID_ARGUMENT) await this.recordRefusal(fields, upload !== null, err.message);
      throw err;
    }
    let job: TaskJob;
    try {
      job = await this.store.create({ ...fields, status: 'queued', message: 'accepted' });
    } catch (err) {
      // a concurrent creation of the same name got its row in first (the check above ran before both inserts)
      await rm(dir, { recursive: true, force: true });
      throw err instanceof TaskNameTaken ? taskExists(input.name) : err;
    }
    try {
      await this.queues.enqueue(id, input.name, input.waitForQuantization);
    } catch (err) {
      await this.store.remove(id);
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return { job_id: id, task: taskView(job) };
  }

  /** The kept record of a refused adapter; an uploaded adapter's files are gone, so it names no path. */
  private async recordRefusal(fields: Omit<NewTaskJob, 'status' | 'message'>, uploaded: boolean, reason: string): Promise<void> {
    const message = `validate: ${reason}`;
    await this.store.create({ ...fields, adapterPath: uploaded ? null : fields.adapterPath, calibrationPath: null, status: 'failed', message });
    await this.store.update(fields.id, (j) => (j.error = message));
  }

  /** Checks the calibration data before anything is written: the text to store, or an uploaded file's path. */
  private async readCalibration(input: CreateTaskInput, upload: UploadedFile | undefined): Promise<{ text: string } | { path: string }> {
    if (upload !== undefined) {
      const text = upload.buffer.toString('utf8');
      checkCalibration(text, 'calibration_file');
      return { text };
    }
    const src = input.calibration;
    if (src === null) throw InlaidError.invalid('`calibration` is required', 'calibration');
    if (src.kind === 'inline') return { text: src.jsonl };
    const stored = join(this.config.tasks.dataDir, 'files', `${src.fileId}.jsonl`);
    if (!existsSync(stored)) throw InlaidError.invalid(`\`calibration.file_id\` ${src.fileId} was not uploaded`, 'calibration.file_id');
    checkCalibration(await readFile(stored, 'utf8'), 'calibration.file_id');
    return { path: stored };
  }

  async uploadFile(file: UploadedFile | undefined): Promise<{ id: string; object: 'file'; bytes: number; filename: string; purpose: string }> {
    if (file === undefined) throw InlaidError.invalid('upload the JSONL as multipart field `file`', 'file');
    const text = file.buffer.toString('utf8');
    checkCalibration(text, 'file');
    const id = newFileId();
    await writeText(join(this.config.tasks.dataDir, 'files', `${id}.jsonl`), text);
    return { id, object: 'file', bytes: file.size, filename: file.originalname, purpose: 'calibration' };
  }

  private async refuseDuplicate(name: string): Promise<void> {
    const latest = await this.store.latest(name);
    const servedByWorker = this.workers.readyConnections().some((c) => c.serves(name));
    if ((latest !== null && LIVE.has(latest.status)) || servedByWorker) throw taskExists(name);
  }

  async list(): Promise<{ object: 'list'; data: TaskViewJson[] }> {
    return { object: 'list', data: (await this.store.listLatest()).map((j) => taskView(j)) };
  }

  async get(name: string): Promise<TaskViewJson> {
    const latest = await this.found(name);
    return taskView(latest, await this.store.history(name));
  }

  private async found(name: string, store: TaskStore = this.store): Promise<TaskJob> {
    const latest = await store.latest(checkTaskName(name));
    if (latest === null) throw new InlaidError(status.NOT_FOUND, `The task \`${name}\` does not exist.`, { param: 'name', code: 'task_not_found' });
    return latest;
  }

  /**
   * Unloads the task everywhere and marks it deleted, under the task's lock (TaskStore.locked): an onboarding
   * step that loads the adapter either finished before (and the unload here removes what it loaded) or runs
   * after, finds the task deleted and loads nothing (onboard-steps.ts). So once DELETE answers, no idle worker
   * serves the task and requests for it get 404. A worker that refuses the unload because the adapter has requests in
   * flight there does not stop it (before: a 409 with the deletion rolled back, while the idle workers had unloaded the
   * task the database still said was served, and nothing loaded it back): the deletion is committed, the others
   * unload it, and that worker's catch-up (AdapterCatchUp.recheck, once committed) holds the name there (no new request
   * reaches it), lets the requests in flight finish and then unloads it (unloadInUse). Unless that worker holds the
   * adapter of its own (no LoadAdapter path: its catch-up would leave it): then, as any other failure to unload, the
   * DELETE fails (ABORTED, OwnAdapterInUse; the transaction rolled back).
   */
  async delete(name: string): Promise<TaskViewJson> {
    const { job, before, filesPending, history, inUse } = await this.store.locked(checkTaskName(name), async (tx) => {
      const latest = await this.found(name, tx);
      if (latest.status === 'deleted') throw new InlaidError(status.NOT_FOUND, `The task \`${name}\` was already deleted.`, { param: 'name', code: 'task_not_found' });
      const inUse = await this.unloadInUse(name, 'name');
      let before: JobState = latest;
      let filesPending = false;
      const job = await tx.transition(latest.id, 'deleted', 'deleted by the client; adapter unloaded', (j) => {
        before = { status: j.status, checkpointVersion: j.checkpointVersion }; // as written, not as read above
        filesPending = j.status === 'failed' && j.progress.filesPending === true;
      });
      await tx.tasks.update({ name }, UNLOADED);
      if (dropsAtNextVersion(before)) {
        // its files go with the re-quantization that drops it (onboard-steps.ts), not before: a run may read them
        await tx.create({ id: randomUUID(), task: name, kind: 'delete', status: 'queued', adapterPath: null, calibrationPath: null, slo: null, waitForQuantization: false, message: 'its Hessians are dropped at the next re-quantization' });
      }
      return { job, before, filesPending, history: await tx.history(name), inUse };
    }).catch(this.rolledBack);
    this.catchUp.recheck(inUse);
    // A task that failed while a re-quantization might read its files (filesPending, onboard-steps.ts
    // failAndUnload) keeps them for the reconciliation pass (after INLAID_FAILED_FILES_TTL_S, no run under way).
    // Otherwise no re-quantization reads them: they go now (gone already if the task failed before one).
    if (!dropsAtNextVersion(before) && !filesPending && job.kind === 'onboard') {
      await removeTaskUploadDir(this.config.tasks.dataDir, name, job.id).catch((err: unknown) => this.logger.warn(`remove the files of ${name} (${job.id}): ${String(err)}`));
    }
    return taskView(job, history);
  }

  /**
   * Unloads the task from every accepting worker (under its lock); answers the workers that refused because the adapter
   * has requests in flight there (UnloadFailed.onlyInUse: nothing else failed), to recheck once the deletion is
   * committed (their catch-up holds the name and unloads it once they finish). Any other failure is thrown, and so is
   * OwnAdapterInUse (ABORTED) when one of those workers reports no LoadAdapter path for it (`param`: the error's).
   */
  private async unloadInUse(name: string, param: string): Promise<string[]> {
    try {
      await this.admin.unloadEverywhere(name);
      return [];
    } catch (err) {
      if (!(err instanceof UnloadFailed) || !err.onlyInUse) throw err;
      const ready = this.workers.readyConnections();
      // the catch-up's rule (catchUpAction): an adapter with no LoadAdapter path is the worker's own, never unloaded
      if (err.inUse.some((addr) => ready.find((c) => c.addr === addr)?.adapterPath(name) === undefined)) {
        throw new OwnAdapterInUse(name, param, err, ready.map((c) => c.addr).filter((a) => !err.inUse.includes(a)));
      }
      this.logger.warn(`${name} has requests in flight on ${err.inUse.join(', ')}: deleted, unloaded there once they finish (${err.message})`);
      return [...err.inUse];
    }
  }

  /** A DELETE's or unload's rollback: an OwnAdapterInUse's other workers are rechecked; `err` is thrown on. */
  private readonly rolledBack = (err: unknown): never => {
    if (err instanceof OwnAdapterInUse) this.catchUp.recheck(err.unloaded);
    throw err;
  };

  /** vLLM's POST /v1/load_lora_adapter: validate and serve at once on the current base (no calibration). */
  async loadLora(body: unknown): Promise<{ message: string; card: common.ModelCard }> {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const name = checkTaskName(b['lora_name'], 'lora_name');
    if (typeof b['lora_path'] !== 'string' || b['lora_path'] === '') throw InlaidError.invalid('`lora_path` is required', 'lora_path');
    await this.refuseDuplicate(name);
    const path = await resolveAdapterPath(b['lora_path'], this.config.tasks.adapterRoots, 'lora_path');
    const card = await this.admin.validate(name, path, 'lora_path');
    await this.store.locked(name, async (tx) => {
      // with its row, so that a DELETE (same lock) sees the task it unloads; the row first, so that a concurrent
      // creation of the name is refused before anything is loaded (the insert waits for its transaction)
      const id = randomUUID();
      await tx.create({ id, task: name, kind: 'load', status: 'serving', adapterPath: path, calibrationPath: null, slo: null, waitForQuantization: false, message: 'loaded (vLLM API), served on the current base' });
      // its digest: the catch-up's reference; the validated one is what a worker already holding the name must have
      const validated = asDigest(card.digest) ?? null;
      // on a failure the row goes with the rollback and the fresh loads go too, under the lock (before, they stayed
      // with no job row, and the retry got 409 task_exists from the workers serving the name)
      const digest = await this.admin.loadEverywhere(name, path, { validated, param: 'lora_path', undoFreshLoads: true });
      await tx.recordAdapterDigest(id, digest);
      await tx.upsertTask(name, path, card.rank, card.targetModules, 'serving', null);
    }).catch((err: unknown) => {
      // an older adapter under the name with requests in flight on a worker (ABORTED, nothing recorded): its catch-up
      // holds the name there so that they drain, and unloads it (it is no live job's)
      if (err instanceof UnloadFailed) this.catchUp.recheck(err.inUse);
      throw err instanceof TaskNameTaken ? taskExists(name) : err;
    });
    // the digest is the gateway's business (ModelCard.digest), not the client's (gRPC LoadLoraAdapter answers this card)
    return { message: `Success: LoRA adapter '${name}' added successfully.`, card: { ...card, id: name, digest: '' } };
  }

  /** vLLM's POST /v1/unload_lora_adapter. */
  async unloadLora(body: unknown): Promise<string> {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const name = checkTaskName(b['lora_name'], 'lora_name');
    const inUse = await this.store.locked(name, async (tx) => {
      // as DELETE: under the task's lock, so no onboarding step loads the adapter back behind the unload; a worker with
      // requests in flight for it unloads it once they finish (its catch-up, recheck), unless it is its own (OwnAdapterInUse)
      if (!this.workers.readyConnections().some((c) => c.serves(name))) {
        throw new InlaidError(status.NOT_FOUND, `The LoRA adapter \`${name}\` is not loaded.`, { param: 'lora_name', code: 'model_not_found' });
      }
      const inUse = await this.unloadInUse(name, 'lora_name');
      const latest = await tx.latest(name);
      if (latest !== null && latest.status !== 'deleted') await tx.transition(latest.id, 'deleted', 'unloaded (vLLM API)');
      await tx.tasks.update({ name }, UNLOADED);
      return inUse;
    }).catch(this.rolledBack);
    this.catchUp.recheck(inUse);
    return `Success: LoRA adapter '${name}' removed successfully.`;
  }
}
