/** Authentication, scopes and per-key limits for every HTTP route (global guard) and the gRPC API. */
import { Global, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { LimitsModule } from '../limits/limits.module';
import { ApiKeyGuard } from './api-key.guard';
import { Authenticator } from './authenticator.service';
import { CallGate } from './call-gate.service';

@Global()
@Module({
  imports: [LimitsModule],
  providers: [Authenticator, CallGate, { provide: APP_GUARD, useClass: ApiKeyGuard }],
  exports: [CallGate, Authenticator],
})
export class AuthModule {}
