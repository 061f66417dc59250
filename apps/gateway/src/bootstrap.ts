/** Builds and starts the gateway (HTTP + gRPC) for a given config; used by main.ts and the e2e tests. */
import 'reflect-metadata';
import { INestApplication, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { GatewayConfig } from '@inlaid/config';
import { AppModule } from './app.module';
import { GrpcServerService } from './grpc-api/grpc-server.service';
import { JsonLogger } from './logging/json-logger';
import { OpenAIErrorFilter } from './openai/openai-error.filter';
import { BOUNDS } from './limits/input-bounds';
import { serverTls } from './tls/tls-credentials';

export interface RunningGateway {
  readonly app: INestApplication;
  readonly httpUrl: string;
  readonly grpcAddr: string;
  close(): Promise<void>;
}


export async function startGateway(config: GatewayConfig, logLevels: LogLevel[] = ['log', 'warn', 'error']): Promise<RunningGateway> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    bodyParser: false,
    logger: new JsonLogger(logLevels),
    httpsOptions: serverTls(config.tls)?.https,
  });
  app.disable('x-powered-by');
  app.useBodyParser('json', { limit: BOUNDS.bodyBytes });
  app.useGlobalFilters(new OpenAIErrorFilter());
  app.enableShutdownHooks();
  await app.listen(config.port, config.host);
  const address = app.getHttpServer().address() as { port: number };
  const grpcPort = app.get(GrpcServerService).port;
  return {
    app,
    httpUrl: `${config.tls === null ? 'http' : 'https'}://${config.host}:${address.port}`,
    grpcAddr: `${config.host}:${grpcPort}`,
    close: () => app.close(),
  };
}
