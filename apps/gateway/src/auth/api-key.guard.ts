/** Global HTTP guard: with INLAID_API_KEYS set, every route except the health probes needs a Bearer key. */
import { CanActivate, ExecutionContext, Inject, Injectable } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import type { Request } from 'express';
import { GATEWAY_CONFIG } from '../config/config.module';
import { checkBearer } from './api-keys';

const PUBLIC_PATHS = new Set(['/healthz', '/readyz']);

@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(@Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig) {}

  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<Request>();
    if (PUBLIC_PATHS.has(req.path)) return true;
    checkBearer(req.headers.authorization, this.config.apiKeys);
    return true;
  }
}
