import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { CostModelController } from './cost-model.controller';
import { SchedulingService } from './scheduling.service';

@Module({ imports: [WorkersModule], controllers: [CostModelController], providers: [SchedulingService], exports: [SchedulingService] })
export class SchedulingModule {}
