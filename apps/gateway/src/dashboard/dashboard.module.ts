import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { DashboardController } from './dashboard.controller';
import { DashboardService } from './dashboard.service';

@Module({ imports: [WorkersModule], controllers: [DashboardController], providers: [DashboardService] })
export class DashboardModule {}
