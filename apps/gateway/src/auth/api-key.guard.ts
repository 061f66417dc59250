/**
 * Global HTTP guard: the route's scope (scopes.ts) decides what key a request needs; limits apply. A completion
 * request with `n` choices (or `best_of` candidates, if more) counts that many times against the key's limits; its slots are freed when the response
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
  const field = (name: string): number => {
    const v = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>)[name] : undefined;
    return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_CHOICES ? v : 1;
  };
  // completions' best_of generates that many candidates: it counts as best_of requests
  return Math.max(field('n'), field('best_of'));
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
