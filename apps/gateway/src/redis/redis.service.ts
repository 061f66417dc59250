/** The shared ioredis connection (BullMQ queues will reuse it). Connected at start-up; reported by /readyz. */
import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import Redis from 'ioredis';
import { GATEWAY_CONFIG } from '../config/config.module';

@Injectable()
export class RedisService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Redis');
  readonly client: Redis;

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    this.client = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2, connectTimeout: 3000 });
    this.client.on('error', (err: Error) => this.logger.warn(`redis: ${err.message}`));
  }

  get connected(): boolean {
    return this.client.status === 'ready';
  }

  async onModuleInit(): Promise<void> {
    try {
      await this.client.connect();
      await this.client.ping();
    } catch (err) {
      // Not fatal: nothing on the serving path needs Redis yet; ioredis keeps reconnecting.
      this.logger.warn(`could not connect to redis at start-up: ${(err as Error).message}`);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    this.client.disconnect();
  }
}
