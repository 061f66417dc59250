import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { DashboardController } from './dashboard.controller';
import { DashboardService } from './dashboard.service';
import { RollupRetentionService } from './rollup-retention.service';

@Module({ imports: [WorkersModule], controllers: [DashboardController], providers: [DashboardService, RollupRetentionService] })
export class DashboardModule {}
