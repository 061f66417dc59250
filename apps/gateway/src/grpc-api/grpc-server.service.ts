/** Runs the client gRPC server (inlaid.v1.Inference) on HOST:GRPC_PORT for the app's lifetime. */
import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { inference } from '@inlaid/proto';
import { GATEWAY_CONFIG } from '../config/config.module';
import { GenerationService } from '../generation/generation.service';
import { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';

@Injectable()
export class GrpcServerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('GrpcApi');
  private readonly server = new Server();
  private boundPort: number | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(GenerationService) generation: GenerationService,
    @Inject(WorkersService) workers: WorkersService,
  ) {
    this.server.addService(inference.InferenceService, inferenceHandlers(generation, workers, config.apiKeys));
  }

  /** The port actually bound (GRPC_PORT=0 picks a free one). */
  get port(): number | null {
    return this.boundPort;
  }

  onApplicationBootstrap(): Promise<void> {
    const addr = `${this.config.host}:${this.config.grpcPort}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(addr, ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(new Error(`gRPC API could not bind ${addr}: ${err.message}`));
        this.boundPort = port;
        this.logger.log(`gRPC API listening on ${this.config.host}:${port}`);
        resolve();
      });
    });
  }

  onApplicationShutdown(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
