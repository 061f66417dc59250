import { Module } from '@nestjs/common';
import { RecordsModule } from '../records/records.module';
import { SchedulingModule } from '../scheduling/scheduling.module';
import { WorkersModule } from '../workers/workers.module';
import { GenerationService } from './generation.service';

@Module({ imports: [WorkersModule, RecordsModule, SchedulingModule], providers: [GenerationService], exports: [GenerationService] })
export class GenerationModule {}
