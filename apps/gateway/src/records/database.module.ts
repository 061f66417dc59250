/** Opens the shared @inlaid/db DataSource at start-up (creating the database and running migrations). */
import { Global, Inject, Injectable, Module, OnApplicationShutdown } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { openDatabase } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { GATEWAY_CONFIG } from '../config/config.module';

@Injectable()
class DatabaseCloser implements OnApplicationShutdown {
  constructor(@Inject(DataSource) private readonly dataSource: DataSource) {}

  async onApplicationShutdown(): Promise<void> {
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}

@Global()
@Module({
  providers: [
    {
      provide: DataSource,
      inject: [GATEWAY_CONFIG],
      useFactory: (config: GatewayConfig) => openDatabase(config.databaseUrl, config.databasePool),
    },
    DatabaseCloser,
  ],
  exports: [DataSource],
})
export class DatabaseModule {}
