/** Builds and starts the gateway (HTTP + gRPC) for a given config; used by main.ts and the e2e tests. */
import 'reflect-metadata';
import { INestApplication, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { GatewayConfig } from '@inlaid/config';
import { AppModule } from './app.module';
import { GrpcServerService } from './grpc-api/grpc-server.service';
import { OpenAIErrorFilter } from './openai/openai-error.filter';

export interface RunningGateway {
  readonly app: INestApplication;
  readonly httpUrl: string;
  readonly grpcAddr: string;
  close(): Promise<void>;
}

const BODY_LIMIT = '8mb';

export async function startGateway(config: GatewayConfig, logLevels: LogLevel[] = ['log', 'warn', 'error']): Promise<RunningGateway> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    bodyParser: false,
    logger: logLevels,
  });
  app.disable('x-powered-by');
  app.useBodyParser('json', { limit: BODY_LIMIT });
  app.useGlobalFilters(new OpenAIErrorFilter());
  app.enableShutdownHooks();
  await app.listen(config.port, config.host);
  const address = app.getHttpServer().address() as { port: number };
  const grpcPort = app.get(GrpcServerService).port;
  return {
    app,
    httpUrl: `http://${config.host}:${address.port}`,
    grpcAddr: `${config.host}:${grpcPort}`,
    close: () => app.close(),
  };
}
