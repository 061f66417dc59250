/** Root module: wires the feature modules around one GatewayConfig. */
import { DynamicModule, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import type { GatewayConfig } from '@inlaid/config';
import { ApiKeyGuard } from './auth/api-key.guard';
import { ConfigModule } from './config/config.module';
import { GrpcApiModule } from './grpc-api/grpc-api.module';
import { HealthModule } from './health/health.module';
import { OpenAIModule } from './openai/openai.module';
import { DatabaseModule } from './records/database.module';
import { RedisModule } from './redis/redis.module';

@Module({})
export class AppModule {
  static forRoot(config: GatewayConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [ConfigModule.forRoot(config), DatabaseModule, RedisModule, HealthModule, OpenAIModule, GrpcApiModule],
      providers: [{ provide: APP_GUARD, useClass: ApiKeyGuard }],
    };
  }
}
