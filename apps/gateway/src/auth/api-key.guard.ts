/**
 * Global HTTP guard: the route's scope (scopes.ts) decides what key a request needs; limits apply. A completion
 * request with `n` choices counts n times against the key's limits; its slots are freed when the response
 * closes. (The JSON body is parsed before guards run.)
 */
import { CanActivate, ExecutionContext, Inject, Injectable } from '@nestjs/common';
import type { Request, Response } from 'express';
import { MAX_CHOICES } from '../generation/fan-out';
import { CallGate } from './call-gate.service';
import { routeAccess } from './scopes';

const GENERATION_PATHS = new Set(['/v1/completions', '/v1/chat/completions']);

/** The path as Express routes it (case-insensitive, a trailing slash optional), so access and cost see the route. */
export function routedPath(path: string): string {
  const p = path.toLowerCase().replace(/\/+$/, '');
  return p === '' ? '/' : p;
}

/**
 * What a request counts for the key's limits: a generation request's `n` when it is a valid one, else 1 (an
 * invalid `n` is refused by validation after the guard, as a 400).
 */
export function requestCost(req: Pick<Request, 'method' | 'path' | 'body'>): number {
  if (req.method !== 'POST' || !GENERATION_PATHS.has(routedPath(req.path))) return 1;
  const body: unknown = req.body;
  const n = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>)['n'] : undefined;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= MAX_CHOICES ? n : 1;
}

@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(@Inject(CallGate) private readonly gate: CallGate) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const http = context.switchToHttp();
    const req = http.getRequest<Request>();
    const access = routeAccess(routedPath(req.path));
    if (access.kind === 'public') return true;
    const release = await this.gate.admit(req.headers.authorization, access.kind === 'scope' ? access.scope : null, requestCost(req));
    const res = http.getResponse<Response>();
    if (res.closed) release(); // the client left while the key was checked: 'close' has fired already
    else res.once('close', release);
    return true;
  }
}
