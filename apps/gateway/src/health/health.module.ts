import { Module } from '@nestjs/common';
import { WorkersModule } from '../workers/workers.module';
import { HealthController } from './health.controller';

@Module({ imports: [WorkersModule], controllers: [HealthController] })
export class HealthModule {}
