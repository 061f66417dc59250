/**
 * Upserts the adapters a worker reports (GetInfo) into the tasks table, marking them `serving`. Only adapters
 * that are new since that worker's previous report are written: a report comes after every load and unload,
 * and writing all of them each time made registering N adapters cost O(N^2) rows (1,000 adapters: a load took
 * 56 ms for the first hundred and 309 ms for the last). A failed write forgets the worker, so the next report
 * writes everything again.
 */
import { Inject, Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { Task } from '@inlaid/db';
import { worker } from '@inlaid/proto';
import { DataSource } from 'typeorm';
import { WorkersService } from '../workers/workers.service';
import { ReportedNames } from './reported-names';

@Injectable()
export class TaskSyncService implements OnModuleInit {
  private readonly logger = new Logger('TaskSync');
  /** Each worker's adapters as last reported (and written). */
  private readonly synced = new ReportedNames();

  constructor(
    @Inject(DataSource) private readonly dataSource: DataSource,
    @Inject(WorkersService) private readonly workers: WorkersService,
  ) {}

  onModuleInit(): void {
    this.workers.onWorkerInfo((addr, info) => void this.sync(addr, info));
  }

  async sync(addr: string, info: worker.WorkerInfo): Promise<void> {
    const adapters = info.models.filter((m) => m.parent !== '');
    const fresh = new Set(this.synced.report(addr, adapters.map((m) => m.id)));
    // the SLO columns are left alone: onboarding writes a task's targets before its adapter is loaded and reported,
    // and DELETE / unload_lora_adapter clear them (tasks.service.ts), so a name served again without onboarding has none
    const tasks = adapters
      .filter((m) => fresh.has(m.id))
      .map((m) => ({ name: m.id, rank: m.rank, targetModules: m.targetModules, status: 'serving' as const }));
    if (tasks.length === 0) return;
    try {
      await this.dataSource.getRepository(Task).upsert(tasks, { conflictPaths: ['name'] });
    } catch (err) {
      this.synced.forget(addr);
      this.logger.error(`could not sync tasks from ${addr}: ${(err as Error).message}`);
    }
  }
}
