/**
 * Feeds GatewayMetrics: every request record (via RecordsService.onRecord), worker state at scrape time,
 * and, every REFRESH_MS, SLO targets and onboarding jobs from Postgres. Re-ranks labelled tasks every
 * RERANK_MS.
 */
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { readJobs } from '../dashboard/task-jobs';
import { toWorkerView } from '../dashboard/worker-view';
import { RecordsService } from '../records/records.service';
import { WorkersService } from '../workers/workers.service';
import { GatewayMetrics } from './gateway-metrics';
import { TargetsTable, targetsFor } from './slo';
import { readTargets } from './slo-targets';
import { DEFAULT_LABELER, TaskLabeler } from './task-labeler';

const REFRESH_MS = 15_000;
const RERANK_MS = 60_000;
const FALLBACK_TARGETS: TargetsTable = { defaults: { ttftMs: 1000, tpotMs: 100, isDefault: true }, byTask: new Map() };

@Injectable()
export class MetricsService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Metrics');
  readonly metrics = new GatewayMetrics(new TaskLabeler(DEFAULT_LABELER));
  private targets: TargetsTable = FALLBACK_TARGETS;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(RecordsService) private readonly records: RecordsService,
    @Inject(WorkersService) private readonly workers: WorkersService,
  ) {}

  async onModuleInit(): Promise<void> {
    this.records.onRecord((row) => this.observe(row));
    await this.refresh();
    this.timers = [setInterval(() => void this.refresh(), REFRESH_MS), setInterval(() => this.metrics.rerank(), RERANK_MS)];
    for (const t of this.timers) t.unref();
  }

  onModuleDestroy(): void {
    for (const t of this.timers) clearInterval(t);
  }

  observe(row: RequestRecord): void {
    const worker = row.worker === null ? undefined : this.workers.snapshots().find((s) => s.addr === row.worker);
    const adapters = worker?.state?.residentAdapters;
    const isAdapter = worker?.baseModel !== undefined && worker.baseModel !== row.task;
    const resident = adapters === undefined || !isAdapter ? null : adapters.includes(row.task);
    this.metrics.observe(row, targetsFor(this.targets, row.task), resident);
  }

  /** The Prometheus text for one scrape. */
  render(): string {
    this.metrics.setWorkers(this.workers.snapshots().map(toWorkerView));
    return this.metrics.registry.render();
  }

  private async refresh(): Promise<void> {
    try {
      this.targets = await readTargets(this.db);
      this.metrics.setJobs((await readJobs(this.db)).jobs);
    } catch (err) {
      this.logger.warn(`could not refresh SLO targets / jobs: ${(err as Error).message}`);
    }
  }
}
