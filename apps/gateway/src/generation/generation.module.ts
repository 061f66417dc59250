import { Module } from '@nestjs/common';
import { RecordsModule } from '../records/records.module';
import { WorkersModule } from '../workers/workers.module';
import { GenerationService } from './generation.service';

@Module({ imports: [WorkersModule, RecordsModule], providers: [GenerationService], exports: [GenerationService] })
export class GenerationModule {}
