/** Root module: wires the feature modules around one GatewayConfig. */
import { DynamicModule, Module } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { AuthModule } from './auth/auth.module';
import { ConfigModule } from './config/config.module';
import { DashboardModule } from './dashboard/dashboard.module';
import { GrpcApiModule } from './grpc-api/grpc-api.module';
import { HealthModule } from './health/health.module';
import { LoggingModule } from './logging/logging.module';
import { MetricsModule } from './metrics/metrics.module';
import { OpenAIModule } from './openai/openai.module';
import { DatabaseModule } from './records/database.module';
import { RedisModule } from './redis/redis.module';
import { TasksModule } from './tasks/tasks.module';

@Module({})
export class AppModule {
  static forRoot(config: GatewayConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [ConfigModule.forRoot(config), DatabaseModule, RedisModule, AuthModule, HealthModule, OpenAIModule, GrpcApiModule, LoggingModule, MetricsModule, DashboardModule, TasksModule],
    };
  }
}
