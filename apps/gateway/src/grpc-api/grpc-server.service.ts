/** Runs the client gRPC server (inlaid.v1.Inference) on HOST:GRPC_PORT for the app's lifetime. */
import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { Server, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { inference } from '@inlaid/proto';
import { CallGate } from '../auth/call-gate.service';
import { GATEWAY_CONFIG } from '../config/config.module';
import { GenerationService } from '../generation/generation.service';
import { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { withMalformedMarker } from './malformed';
import { BOUNDS } from '../limits/input-bounds';
import { grpcServerCredentials } from '../tls/tls-credentials';

@Injectable()
export class GrpcServerService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('GrpcApi');
  // Bounded like the HTTP body; larger messages get RESOURCE_EXHAUSTED before they are decoded.
  private readonly server = new Server({ 'grpc.max_receive_message_length': BOUNDS.bodyBytes });
  private boundPort: number | null = null;

  constructor(
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
    @Inject(GenerationService) generation: GenerationService,
    @Inject(WorkersService) workers: WorkersService,
    @Inject(CallGate) gate: CallGate,
  ) {
    this.server.addService(withMalformedMarker(inference.InferenceService), inferenceHandlers(generation, workers, gate));
  }

  /** Lets other feature modules (tasks) serve their gRPC services on the same port; call before bootstrap. */
  addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
    this.server.addService(service, implementation);
  }

  /** The port actually bound (GRPC_PORT=0 picks a free one). */
  get port(): number | null {
    return this.boundPort;
  }

  onApplicationBootstrap(): Promise<void> {
    const addr = `${this.config.host}:${this.config.grpcPort}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(addr, grpcServerCredentials(this.config.tls), (err, port) => {
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
