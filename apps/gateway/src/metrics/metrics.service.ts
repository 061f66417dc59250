/**
 * Feeds GatewayMetrics: every request record (via RecordsService.onRecord), worker state at scrape time,
 * and, every REFRESH_MS, SLO targets and onboarding jobs from Postgres (until the first read, the configured
 * INLAID_SLO_TTFT_MS / TPOT_MS, which the scheduler writes into slo_defaults). Re-ranks labelled tasks every RERANK_MS.
 */
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import type { RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { GATEWAY_CONFIG } from '../config/config.module';
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

/** Every task judged against the configured defaults: the targets before the first read from Postgres. */
export function configuredTargets(c: Pick<GatewayConfig['scheduling'], 'sloTtftMs' | 'sloTpotMs'>): TargetsTable {
  return { defaults: { ttftMs: c.sloTtftMs, tpotMs: c.sloTpotMs, isDefault: true }, byTask: new Map() };
}

@Injectable()
export class MetricsService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Metrics');
  readonly metrics = new GatewayMetrics(new TaskLabeler(DEFAULT_LABELER));
  private targets: TargetsTable;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    @Inject(GATEWAY_CONFIG) config: GatewayConfig,
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(RecordsService) private readonly records: RecordsService,
    @Inject(WorkersService) private readonly workers: WorkersService,
  ) {
    this.targets = configuredTargets(config.scheduling);
  }

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
