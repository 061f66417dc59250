import { Module } from '@nestjs/common';
import { MulterModule } from '@nestjs/platform-express';
import type { GatewayConfig } from '@inlaid/config';
import { GATEWAY_CONFIG } from '../config/config.module';
import { GrpcApiModule } from '../grpc-api/grpc-api.module';
import { AdapterCatchUp } from './adapter-catch-up.service';
import { WorkersModule } from '../workers/workers.module';
import { OnboardQueues } from './onboard-queues.service';
import { OnboardSteps } from './onboard-steps';
import { TaskStore } from './task-store.service';
import { TasksController } from './tasks.controller';
import { TasksGrpcService } from './tasks-grpc.service';
import { TasksService } from './tasks.service';
import { uploadLimits } from './upload-limits';
import { WorkerAdminService } from './worker-admin.service';

@Module({
  imports: [
    WorkersModule,
    GrpcApiModule,
    MulterModule.registerAsync({ useFactory: (config: GatewayConfig) => uploadLimits(config.tasks.maxUploadBytes), inject: [GATEWAY_CONFIG] }),
  ],
  controllers: [TasksController],
  providers: [TaskStore, WorkerAdminService, OnboardSteps, OnboardQueues, TasksService, TasksGrpcService, AdapterCatchUp],
})
export class TasksModule {}
