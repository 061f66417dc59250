/**
 * One onboarding (or load / delete) of a task: its inputs, the stage it reached, per-stage and per-layer
 * progress, the error that stopped it and the checkpoint version it went live with. The history of a task is
 * its task_jobs rows in creation order; each row's `history` lists its own transitions.
 */
import { Column, CreateDateColumn, Entity, Index, PrimaryColumn, UpdateDateColumn } from 'typeorm';

export type TaskJobKind = 'onboard' | 'load' | 'delete';
export type TaskJobStatus = 'queued' | 'validating' | 'loading' | 'quantizing' | 'activating' | 'active' | 'serving' | 'failed' | 'deleted' | 'completed';

export interface StageProgress {
  status: 'running' | 'done' | 'skipped' | 'failed';
  startedAt: string;
  finishedAt?: string;
  seconds?: number;
  message?: string;
}

export interface LayerProgress {
  layer: number;
  numLayers: number;
  hessianSeconds: number;
  swapSeconds: number;
  at: string;
}

/** One worker's part in a shared re-quantization: the quantizer stages layers, followers swap them in. */
export interface WorkerQuantProgress {
  role: 'quantizer' | 'follower';
  stage: 'planned' | 'layer' | 'done' | 'failed';
  layersDone: number;
  numLayers: number | null;
  checkpointVersion: number | null;
  message?: string;
  at: string;
}

export interface TaskJobProgress {
  stages: Partial<Record<string, StageProgress>>;
  /** The quantizer's layers (re-quantized and staged for the other workers). */
  layers: LayerProgress[];
  /** Tasks re-quantized together in the run that took this one (batching). */
  batch?: string[];
  /** Address of the worker that re-quantized (the one that took over after a failover; the last store's when several). */
  quantizer?: string;
  /** Per worker address: where it is in the run (quantizer and followers). */
  workers?: Record<string, WorkerQuantProgress>;
  /** When the gateway removed a failed task's upload directory (onboard-steps.ts freeFailedFiles). */
  filesRemovedAt?: string;
  /** Why the gateway refused to remove it (a path outside INLAID_DATA_DIR/tasks, a link): not tried again. */
  filesRefused?: string;
  /**
   * Set when a task fails while it may be in a re-quantization (quantizing, or in a checkpoint): its upload
   * directory is left to the reconciliation pass (after INLAID_FAILED_FILES_TTL_S, no run under way), also
   * once the task is deleted (tasks.service.ts delete()).
   */
  filesPending?: boolean;
  /** Removals that failed other than by refusal (EACCES, EBUSY): how many, the last error; given up after a few. */
  filesRemoveError?: { tries: number; last: string; at: string };
}

export interface TaskJobEvent {
  at: string;
  status: TaskJobStatus;
  message: string;
}

/** Statuses of a job whose task still holds its name. */
export const LIVE_JOB_STATUSES: readonly TaskJobStatus[] = ['queued', 'validating', 'loading', 'quantizing', 'activating', 'active', 'serving'];

/** The predicate of idx_task_jobs_live_task: at most one live onboard/load job per task name (migration 1764600000000). */
export const LIVE_JOB_PREDICATE = `"kind" IN ('onboard', 'load') AND "status" IN (${LIVE_JOB_STATUSES.map((s) => `'${s}'`).join(', ')})`;

@Entity({ name: 'task_jobs' })
@Index('idx_task_jobs_task', ['task', 'createdAt'])
@Index('idx_task_jobs_live_task', ['task'], { unique: true, where: LIVE_JOB_PREDICATE })
export class TaskJob {
  @PrimaryColumn({ type: 'text' })
  id!: string;

  @Column({ type: 'text' })
  task!: string;

  @Column({ type: 'text' })
  kind!: TaskJobKind;

  @Column({ type: 'text' })
  status!: TaskJobStatus;

  @Column({ name: 'adapter_path', type: 'text', nullable: true })
  adapterPath!: string | null;

  /**
   * The content digest of the job's adapter files (WorkerInfo.adapter_digests; migration 1764900000000): from the
   * validate step (or a vLLM-style load's validation) on, that of the files the worker validated (ValidateAdapter's
   * card); from the load (or activate) step on, that of what the workers loaded (apps/gateway/src/tasks/job-digest.ts).
   * Null when unknown: for workers that report none, before the validate step, and when fresh loads read different
   * bytes with no validated digest. The adapter catch-up replaces (or, the job not loaded yet, unloads) an adapter
   * loaded from adapterPath with another digest.
   */
  @Column({ name: 'adapter_digest', type: 'text', nullable: true })
  adapterDigest!: string | null;

  @Column({ name: 'calibration_path', type: 'text', nullable: true })
  calibrationPath!: string | null;

  @Column({ type: 'jsonb', nullable: true })
  slo!: { ttft_ms?: number; tpot_ms?: number } | null;

  @Column({ name: 'wait_for_quantization', type: 'boolean', default: false })
  waitForQuantization!: boolean;

  @Column({ type: 'jsonb', default: () => `'{"stages":{},"layers":[]}'` })
  progress!: TaskJobProgress;

  @Column({ type: 'text', nullable: true })
  error!: string | null;

  @Column({ name: 'checkpoint_version', type: 'integer', nullable: true })
  checkpointVersion!: number | null;

  @Column({ type: 'jsonb', default: () => `'[]'` })
  history!: TaskJobEvent[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
