/** Global HTTP guard: the route's scope (scopes.ts) decides what key a request needs; limits apply. */
import { CanActivate, ExecutionContext, Inject, Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import { CallGate } from './call-gate.service';
import { routeAccess } from './scopes';

@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(@Inject(CallGate) private readonly gate: CallGate) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const http = context.switchToHttp();
    const req = http.getRequest<Request>();
    const access = routeAccess(req.path);
    if (access.kind === 'public') return true;
    const release = await this.gate.admit(req.headers.authorization, access.kind === 'scope' ? access.scope : null);
    http.getResponse<Response>().once('close', release);
    return true;
  }
}
