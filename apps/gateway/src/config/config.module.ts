/** Provides the GatewayConfig (parsed once, in main.ts or a test) to every feature module. */
import { DynamicModule, Global, Module } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';

export const GATEWAY_CONFIG = Symbol('GATEWAY_CONFIG');

@Global()
@Module({})
export class ConfigModule {
  static forRoot(config: GatewayConfig): DynamicModule {
    return { module: ConfigModule, providers: [{ provide: GATEWAY_CONFIG, useValue: config }], exports: [GATEWAY_CONFIG] };
  }
}
