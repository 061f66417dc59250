/**
 * The gateway's scheduler: one @inlaid/scheduling Scheduler (policy from INLAID_POLICY) behind a
 * Dispatcher, fed by the worker links. A pass runs on every arrival, finish and WorkerState, and on a
 * short timer. The length predictor is trained at start-up from recent request records and then learns
 * from every finished request. With INLAID_COST_MODEL the workers' step cost (loaded and validated here, at
 * start-up) goes with every worker's capacity, which turns on the step budget and batched admission.
 */
import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { Scheduler, StepCost } from '@inlaid/scheduling';
import { DataSource } from 'typeorm';
import { GATEWAY_CONFIG } from '../config/config.module';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { loadStepCost } from './cost-model-file';
import { Dispatcher } from './dispatcher';
import { recentLengthRecords, trainPredictor } from './predictor-training';
import { PreparedRequest } from './resume';
import { schedulerOptions, workerCapacity } from './scheduler-options';
import { Ticket } from './ticket';

@Injectable()
export class SchedulingService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Scheduling');
  readonly dispatcher: Dispatcher;
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();
  private readonly stepCost: StepCost | undefined;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(WorkersService) workers: WorkersService,
    @Inject(DataSource) private readonly db: DataSource,
  ) {
    this.stepCost = loadStepCost(config.scheduling.costModelPath);
    if (this.stepCost !== undefined) this.logger.log(`worker step cost from ${config.scheduling.costModelPath}`);
    const scheduler = new Scheduler(schedulerOptions(config.scheduling));
    this.dispatcher = new Dispatcher(scheduler, () => (performance.now() - this.t0) / 1000, this.logger, config.workerAddrs);
    workers.onLink((conn, event) => (event === 'down' ? this.dispatcher.workerDown(conn.addr) : this.refresh(conn)));
  }

  async onModuleInit(): Promise<void> {
    const s = this.config.scheduling;
    this.timer = setInterval(() => this.dispatcher.pass(), s.tickMs);
    this.timer.unref();
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
  }

  submit(req: PreparedRequest, task: string, prompt: string | undefined): Ticket {
    return this.dispatcher.submit(req, task, prompt);
  }

  cancel(id: string): void {
    this.dispatcher.cancel(id);
  }

  private refresh(conn: WorkerConnection): void {
    const capacity = workerCapacity(conn.addr, conn.latestState, this.config.scheduling, this.stepCost);
    if (capacity === null || !conn.ready) return;
    const tasks = [...(conn.latestState?.residentAdapters ?? []), ...conn.models().map((m) => m.id)];
    this.dispatcher.workerUp(conn, capacity, tasks);
  }
}
