import { Module } from '@nestjs/common';
import { GenerationModule } from '../generation/generation.module';
import { WorkersModule } from '../workers/workers.module';
import { GrpcServerService } from './grpc-server.service';

@Module({ imports: [GenerationModule, WorkersModule], providers: [GrpcServerService], exports: [GrpcServerService] })
export class GrpcApiModule {}
