/**
 * The BullMQ side of onboarding: a FlowProducer that enqueues one task's flow, and the processors of the two
 * queues (steps; re-quantization with concurrency 1 so tasks arriving meanwhile batch into the next run).
 * Locks are short so that after a gateway crash another gateway (or the restarted one) picks the stalled
 * step up within seconds; the step is idempotent (onboard-steps.ts). A step BullMQ fails on its own (stalled
 * too often) marks its task failed too, and every gateway reconciles what a dead one left half-way
 * (onboard-recovery.ts): a row whose flow was never enqueued, a flow that failed with nobody to record it.
 * It does so at start and then every INLAID_ONBOARD_RECONCILE_MS (±20% jitter, so gateways started together
 * drift apart), one gateway at a time (TaskStore.reconciling, a Postgres advisory lock; job ids derive from
 * the row id besides, so even two enqueues of one flow add it once). A periodic pass only looks at rows
 * older than INLAID_ONBOARD_RECONCILE_GRACE_MS: a live gateway writes the row and enqueues its flow right
 * after (tasks.service.ts create()). The same pass removes the upload directories of failed tasks that had
 * to keep them a while (task-files.ts), except those of tasks a run under way holds in its batch (a run writes
 * its batch on its rows when it starts; a run that starts later reads only tasks still quantizing, never a
 * failed one; the TTL covers a run between reading its batch and writing it). A row that throws is logged and the pass goes on with the next; a gateway
 * shutting down stops its pass between rows and waits for it at most SHUTDOWN_WAIT_MS.
 */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { MAX_TIMER_MS, RECONCILE_JITTER as JITTER, type GatewayConfig } from '@inlaid/config';
import { buildOnboardFlow, ONBOARD_QUEUE, onboardSteps, queueOf, REQUANTIZE_QUEUE, StepPayload, stepJobId } from '@inlaid/jobs';
import { FlowProducer, Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { flowState, rootFailure, StepJobLookup } from './onboard-recovery';
import { OnboardSteps } from './onboard-steps';
import { TaskStore } from './task-store.service';

const LOCK_MS = 5000;
const STALLED_CHECK_MS = 2500;
/** How long a shutdown waits for a reconciliation pass under way before closing its connections. */
const SHUTDOWN_WAIT_MS = 5000;

/** The wait before the next pass: `period` jittered by `random` in [0, 1) by ±RECONCILE_JITTER (tasks-config.ts bounds the period by it), within what a timer keeps (MAX_TIMER_MS). */
export function reconcileDelay(period: number, random: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.round(period * (1 - JITTER + 2 * JITTER * random))));
}
const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.ABORTED, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED]);

/** What one reconciliation pass did (task job ids). */
export interface Reconciled {
  enqueued: string[];
  failed: string[];
  filesRemoved: string[];
}

@Injectable()
export class OnboardQueues implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('OnboardQueues');
  private readonly connection: IORedis;
  private readonly flows: FlowProducer;
  private readonly workers: Worker[] = [];
  private readonly queues: Map<string, Queue>;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  /** Passes under way (the periodic one, and any reconcile() call). */
  private readonly passes = new Set<Promise<unknown>>();

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(OnboardSteps) private readonly steps: OnboardSteps,
    @Inject(TaskStore) private readonly store: TaskStore,
  ) {
    this.connection = new IORedis(config.redisUrl, { maxRetriesPerRequest: null, lazyConnect: false });
    this.connection.on('error', (err: Error) => this.logger.warn(`redis: ${err.message}`));
    this.flows = new FlowProducer({ connection: this.connection, prefix: config.tasks.queuePrefix });
    // Without a listener an ioredis 'error' (e.g. Redis restarting) is an unhandled event that kills the process.
    this.flows.on('error', (err: Error) => this.logger.warn(`flow producer: ${err.message}`));
    this.queues = new Map([ONBOARD_QUEUE, REQUANTIZE_QUEUE].map((q) => [q, new Queue(q, { connection: this.connection, prefix: config.tasks.queuePrefix })]));
    for (const q of this.queues.values()) q.on('error', (err: Error) => this.logger.warn(`queue: ${err.message}`));
  }

  async enqueue(taskJobId: string, task: string, waitForQuantization: boolean): Promise<void> {
    await this.flows.add(buildOnboardFlow(taskJobId, task, onboardSteps(waitForQuantization)));
  }

  onApplicationBootstrap(): void {
    const opts = { connection: this.connection, prefix: this.config.tasks.queuePrefix, lockDuration: LOCK_MS, stalledInterval: STALLED_CHECK_MS, maxStalledCount: 5 };
    const process = (job: Job<StepPayload>) => this.process(job);
    this.workers.push(new Worker<StepPayload>(ONBOARD_QUEUE, process, { ...opts, concurrency: 4 }));
    this.workers.push(new Worker<StepPayload>(REQUANTIZE_QUEUE, process, { ...opts, concurrency: 1 }));
    for (const w of this.workers) {
      w.on('error', (err) => this.logger.warn(`queue worker: ${err.message}`));
      // finished: failed for good (not retried). process() has recorded its own failures; this records BullMQ's
      // (a step that stalled too often, or a parent step failed by its failed child: the child's failure is recorded).
      w.on('failed', (job: Job<StepPayload> | undefined, err: Error) => {
        if (job?.finishedOn === undefined) return;
        this.recordStepFailure(job.data, err.message).catch((e: unknown) => this.logger.warn(`recording the failure of task job ${job.data.taskJobId}: ${String(e)}`));
      });
    }
    this.startReconciling();
  }

  /**
   * The start-up pass (no grace: as before, a restarted gateway enqueues at once what it or another left
   * unenqueued; an enqueue that races a live gateway's adds the flow once), then a pass every period.
   */
  private startReconciling(): void {
    const { reconcileIntervalMs: period, reconcileGraceMs: grace } = this.config.tasks;
    const run = (graceMs: number): void => {
      this.timer = null;
      if (this.stopped) return;
      void this.reconcile(graceMs)
        .catch((err: unknown) => this.logger.warn(`reconciling onboardings: ${String(err)}`))
        .finally(() => {
          if (this.stopped || period === 0) return;
          this.timer = setTimeout(() => run(grace), reconcileDelay(period, Math.random()));
          this.timer.unref();
        });
    };
    run(0);
  }

  /** Resolves once the reconciliation passes under way (the start-up one, at first) have ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.passes]);
  }

  /**
   * One reconciliation pass, or null when another gateway is running one (TaskStore.reconciling) or this one
   * is shutting down. Onboardings created more than `graceMs` ago that a dead gateway left with no flow are
   * enqueued, flows that failed unrecorded are recorded (onboard-recovery.ts); then the upload directories of
   * failed tasks older than INLAID_FAILED_FILES_TTL_S go (task-files.ts), except those of tasks a run under way
   * (any gateway's) holds in its batch (TaskStore.namesInRunningBatches). A row that throws is logged and skipped; the pass stops between rows once the gateway stops.
   */
  async reconcile(graceMs: number = this.config.tasks.reconcileGraceMs): Promise<Reconciled | null> {
    if (this.stopped) return null;
    const pass = this.store.reconciling(() => this.reconcilePass(graceMs));
    this.passes.add(pass);
    try {
      return await pass;
    } finally {
      this.passes.delete(pass);
    }
  }

  private async reconcilePass(graceMs: number): Promise<Reconciled> {
    const out: Reconciled = { enqueued: [], failed: [], filesRemoved: [] };
    for (const j of await this.store.unfinishedOnboardings(graceMs)) {
      if (this.stopped) return out;
      try {
        const s = await flowState(j, this.lookup);
        if (s.kind === 'missing') {
          this.logger.warn(`task ${j.task}: its flow was never enqueued (a gateway died); enqueuing it`);
          await this.enqueue(j.id, j.task, j.waitForQuantization);
          out.enqueued.push(j.id);
        } else if (s.kind === 'failed') {
          await this.recordFailure(j.id, s.step, s.reason);
          out.failed.push(j.id);
        }
      } catch (err) {
        this.logger.warn(`reconciling task ${j.task} (${j.id}): ${String(err)}; going on with the next`);
      }
    }
    if (this.stopped) return out;
    const inRuns = await this.store.namesInRunningBatches();
    for (const j of await this.store.failedWithFiles(this.config.tasks.failedFilesTtlMs)) {
      if (this.stopped) return out;
      if (inRuns.has(j.task)) continue; // a run under way may read its files
      try {
        if (await this.steps.freeFailedFiles(j)) out.filesRemoved.push(j.id);
      } catch (err) {
        this.logger.warn(`removing the files of failed task ${j.task} (${j.id}): ${String(err)}; going on with the next`);
      }
    }
    return out;
  }

  /** A step job's state and failure reason in Redis (onboard-recovery.ts). */
  private readonly lookup: StepJobLookup = async (step, taskJobId) => {
    const job = await Job.fromId<StepPayload>(this.queues.get(queueOf(step)) as Queue, stepJobId(taskJobId, step));
    return job === undefined ? null : { state: await job.getState(), failedReason: job.failedReason };
  };

  /** Records a step BullMQ failed as the failure of the flow's first failed step (rootFailure, onboard-recovery.ts). */
  private async recordStepFailure(data: StepPayload, reason: string): Promise<void> {
    const tj = await this.store.get(data.taskJobId);
    if (tj === null || tj.status === 'failed' || tj.status === 'deleted') return;
    const cause = await rootFailure(tj, { step: data.step, reason }, this.lookup);
    await this.recordFailure(tj.id, cause.step, cause.reason);
  }

  /** Marks the task job failed at `step` (and unloads it) unless it has ended already. */
  private async recordFailure(taskJobId: string, step: string, reason: string): Promise<void> {
    const tj = await this.store.get(taskJobId);
    if (tj === null || tj.status === 'failed' || tj.status === 'deleted') return;
    await this.steps.failAndUnload(tj, step, reason);
    this.logger.warn(`task ${tj.task} failed at ${step}: ${reason}`);
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    // a pass under way stops after its current row and ends before its connections close; a row hung on Redis
    // or Postgres does not hold the shutdown up for long (closing the connections fails it)
    let limit: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.settled().then(() => true),
      new Promise<false>((r) => (limit = setTimeout(() => r(false), SHUTDOWN_WAIT_MS))),
    ]);
    clearTimeout(limit);
    if (!ended) this.logger.warn(`a reconciliation pass is still under way after ${SHUTDOWN_WAIT_MS} ms; closing its connections`);
    // force: do not wait for a running step; its lock expires and the next gateway resumes it.
    await Promise.all(this.workers.map((w) => w.close(true)));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    await this.flows.close();
    this.connection.disconnect();
  }

  private async process(job: Job<StepPayload>): Promise<string> {
    const { taskJobId, step } = job.data;
    try {
      return await this.steps.run(step, taskJobId, { report: (data) => job.updateData({ ...job.data, ...data }) });
    } catch (err) {
      const retryable = err instanceof InlaidError && RETRYABLE.has(err.status);
      const attempts = job.opts.attempts ?? 1;
      if (retryable && job.attemptsMade + 1 < attempts) throw err;
      const reason = err instanceof Error ? err.message : String(err);
      await this.recordFailure(taskJobId, step, reason);
      throw new UnrecoverableError(reason); // recorded: BullMQ must not retry it
    }
  }
}
