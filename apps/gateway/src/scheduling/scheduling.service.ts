/**
 * The gateway's scheduler: one @inlaid/scheduling Scheduler (policy from INLAID_POLICY) behind a
 * Dispatcher, fed by the worker links. A pass runs on every arrival, finish and WorkerState, and on a
 * short timer. The length predictor is trained at start-up from recent request records and then learns
 * from every finished request. With INLAID_COST_MODEL the workers' step cost (loaded and validated here, at
 * start-up) goes with every worker's capacity, which turns on the step budget and batched admission. With
 * INLAID_COST_FIT the steps served are timed and fitted (served-cost.ts); `online` plans with that fit. Each task is
 * planned against its own SLO (its `slo` at onboarding, else INLAID_SLO_TTFT_MS / TPOT_MS), read from Postgres by
 * task-slo-sync.ts, which also makes those defaults the dashboard's.
 */
import { writeFileSync } from 'node:fs';
import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { FittedCostModelFile, Scheduler, StepCost } from '@inlaid/scheduling';
import { DataSource } from 'typeorm';
import { GATEWAY_CONFIG } from '../config/config.module';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { loadStepCost } from './cost-model-file';
import { Dispatcher } from './dispatcher';
import { recentLengthRecords, trainPredictor } from './predictor-training';
import { PreparedRequest } from './resume';
import { schedulerOptions, workerCapacity } from './scheduler-options';
import { ServedCost } from './served-cost';
import { REFRESH_MS as SLO_REFRESH_MS, TaskSloSync } from './task-slo-sync';
import { Ticket } from './ticket';

const EXPORT_EVERY_MS = 10_000;

@Injectable()
export class SchedulingService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Scheduling');
  readonly dispatcher: Dispatcher;
  private timer: NodeJS.Timeout | null = null;
  private exportTimer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();
  private readonly stepCost: StepCost | undefined;
  /** Served-step timing and fit (INLAID_COST_FIT measure/online); null when off. */
  readonly served: ServedCost | null;
  private readonly onlineFrom = new Set<string>();
  private readonly conns = new Map<string, WorkerConnection>();
  private readonly planned = new Map<string, StepCost | undefined>();
  private readonly slos: TaskSloSync;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(WorkersService) workers: WorkersService,
    @Inject(DataSource) private readonly db: DataSource,
  ) {
    const s = config.scheduling;
    this.stepCost = loadStepCost(s.costModelPath);
    if (this.stepCost !== undefined) this.logger.log(`worker step cost from ${s.costModelPath}`);
    const scheduler = new Scheduler(schedulerOptions(s));
    this.dispatcher = new Dispatcher(scheduler, () => (performance.now() - this.t0) / 1000, this.logger, config.workerAddrs);
    this.slos = new TaskSloSync(db, scheduler, { ttftMs: s.sloTtftMs, tpotMs: s.sloTpotMs }, (m) => this.logger.warn(m));
    this.served = s.costFit === 'off' ? null : new ServedCost({ window: s.costFitWindow, minSteps: s.costFitMinSteps, terms: s.costFitTerms }, s.costFitPlanQuantile ?? undefined);
    if (this.served !== null) {
      this.dispatcher.observe(this.served);
      this.logger.log(`served-step cost fit: ${s.costFit} (window ${s.costFitWindow} steps, from ${s.costFitMinSteps}; terms ${s.costFitTerms.join(', ')}${s.costFitPlanQuantile === null ? '' : `; plans with the p${100 * s.costFitPlanQuantile} step time`})`);
    }
    workers.onLink((conn, event) => (event === 'down' ? this.workerDown(conn.addr) : this.refresh(conn)));
  }

  async onModuleInit(): Promise<void> {
    const s = this.config.scheduling;
    this.timer = setInterval(() => this.dispatcher.pass(), s.tickMs);
    this.timer.unref();
    if (this.served !== null && s.costFitExport !== null) {
      this.exportTimer = setInterval(() => this.writeExport(), EXPORT_EVERY_MS);
      this.exportTimer.unref();
    }
    try {
      await this.slos.start();
    } catch (err) {
      this.logger.warn(`tasks are planned with the default SLO (${s.sloTtftMs} / ${s.sloTpotMs} ms) until their own are read (every ${SLO_REFRESH_MS / 1000} s): ${(err as Error).message}`);
    }
    try {
      const records = await recentLengthRecords(this.db, s.trainRecords);
      trainPredictor(this.dispatcher.scheduler.predictor, records);
      this.logger.log(`policy ${s.policy}, predictor ${s.predictor} trained on ${records.length} request records`);
    } catch (err) {
      this.logger.warn(`length predictor starts untrained: ${(err as Error).message}`);
    }
  }

  onApplicationShutdown(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.slos.stop();
    if (this.exportTimer !== null) {
      clearInterval(this.exportTimer);
      this.writeExport();
    }
  }

  submit(req: PreparedRequest, task: string, prompt: string | undefined): Ticket {
    return this.dispatcher.submit(req, task, prompt);
  }

  cancel(id: string): void {
    this.dispatcher.cancel(id);
  }

  /** The served-step fit of worker `addr` (default: the first measured) as a calibration file. */
  costModelFile(addr?: string, withPoints = false): FittedCostModelFile | undefined {
    const served = this.served;
    if (served === null) return undefined;
    const a = addr ?? served.addrs()[0];
    if (a === undefined) return undefined;
    const s = this.config.scheduling;
    const state = this.conns.get(a)?.latestState ?? null;
    const cap = {
      kv_blocks: Math.max(1, state?.totalKvBlocks ?? 1),
      block_size: Math.max(1, state?.blockSize ?? 1),
      max_batch_rows: s.workerRows,
      max_prefill_tokens: s.workerPrefillTokens,
    };
    const context = `INLAID_COST_FIT=${s.costFit}, policy ${s.policy}${s.costModelPath === null ? '' : `, prior ${s.costModelPath}`}`;
    return served.exportFile(a, cap, { ttft_s: s.sloTtftMs / 1000, tpot_s: s.sloTpotMs / 1000 }, context, new Date(), withPoints);
  }

  private writeExport(): void {
    const path = this.config.scheduling.costFitExport;
    const file = this.costModelFile(undefined, true);
    if (path === null || file === undefined) return;
    try {
      writeFileSync(path, JSON.stringify(file, null, 1) + '\n');
    } catch (err) {
      this.logger.warn(`INLAID_COST_FIT_EXPORT: cannot write "${path}": ${(err as Error).message}`);
    }
  }

  /** The step cost the scheduler plans `addr` with: the online fit once it has enough steps, else the file's. */
  private stepCostFor(addr: string): StepCost | undefined {
    if (this.config.scheduling.costFit !== 'online' || this.served === null) return this.stepCost;
    const fitted = this.served.stepCost(addr);
    if (fitted === undefined) return this.stepCost;
    if (!this.onlineFrom.has(addr)) {
      this.onlineFrom.add(addr);
      this.logger.log(`worker ${addr}: planning with the served-step fit from now on (${this.served.stepsSeen(addr)} steps)`);
    }
    return fitted;
  }

  /** The step cost the scheduler last got for worker `addr` (undefined: none). */
  plannedStepCost(addr: string): StepCost | undefined {
    return this.planned.get(addr);
  }

  private refresh(conn: WorkerConnection): void {
    this.conns.set(conn.addr, conn);
    const stepCost = this.stepCostFor(conn.addr);
    this.planned.set(conn.addr, stepCost);
    const capacity = workerCapacity(conn.addr, conn.latestState, this.config.scheduling, stepCost);
    if (capacity === null || !conn.ready) return;
    // a model its adapter catch-up may still load, replace or unload there is not its to run yet (pendingFor, placement's
    // holds): the worker is no candidate for it, neither as one that lists it nor in placement's fallback to every
    // worker when none lists it (a task placed on a worker lacking it got a 404 at Admit, one listed from an older job
    // ran on the old adapter); a task only such workers could take waits homeless. The catch-up's changes (a load, a
    // released hold) come as 'info' events, which run this again and place it.
    const listed = [...(conn.latestState?.residentAdapters ?? []), ...conn.models().map((m) => m.id)];
    this.slos.noticeServed(conn.addr, listed);
    this.dispatcher.workerUp(conn, capacity, listed, conn.latestState?.draining === true, (t) => conn.pendingFor(t));
  }

  private workerDown(addr: string): void {
    this.slos.forget(addr);
    this.dispatcher.workerDown(addr);
  }
}
