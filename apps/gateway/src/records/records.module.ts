import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { RecordsService } from './records.service';
import { TaskSyncService } from './task-sync.service';

@Module({ imports: [WorkersModule], providers: [RecordsService, TaskSyncService], exports: [RecordsService] })
export class RecordsModule {}
