/** Upserts the adapters a worker reports (GetInfo) into the tasks table, marking them `serving`. */
import { Inject, Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { Task } from '@inlaid/db';
import { worker } from '@inlaid/proto';
import { DataSource } from 'typeorm';
import { WorkersService } from '../workers/workers.service';

@Injectable()
export class TaskSyncService implements OnModuleInit {
  private readonly logger = new Logger('TaskSync');

  constructor(
    @Inject(DataSource) private readonly dataSource: DataSource,
    @Inject(WorkersService) private readonly workers: WorkersService,
  ) {}

  onModuleInit(): void {
    this.workers.onWorkerInfo((addr, info) => void this.sync(addr, info));
  }

  async sync(addr: string, info: worker.WorkerInfo): Promise<void> {
    const tasks = info.models
      .filter((m) => m.parent !== '')
      .map((m) => ({ name: m.id, rank: m.rank, targetModules: m.targetModules, status: 'serving' as const }));
    if (tasks.length === 0) return;
    try {
      await this.dataSource.getRepository(Task).upsert(tasks, { conflictPaths: ['name'] });
    } catch (err) {
      this.logger.error(`could not sync tasks from ${addr}: ${(err as Error).message}`);
    }
  }
}
