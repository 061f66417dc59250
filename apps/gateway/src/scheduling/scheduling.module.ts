import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { SchedulingService } from './scheduling.service';

@Module({ imports: [WorkersModule], providers: [SchedulingService], exports: [SchedulingService] })
export class SchedulingModule {}
