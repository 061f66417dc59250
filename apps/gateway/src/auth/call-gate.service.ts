/**
 * The one admission check shared by HTTP and gRPC: authenticate the key, check the route's scope, take the
 * key's rate-limit tokens and concurrency slots: `cost` of each (a generation request's `n`, 1 otherwise).
 * Resolves to the function that frees the slots, carrying the tenant the call is for.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { ApiKeyScope } from '@inlaid/db';
import { LimiterService, Release } from '../limits/limiter.service';
import { Authenticator } from './authenticator.service';
import { requireScope } from './scopes';

/** Frees the admitted call's slots; `tenant`: the key's principal id (gRPC request ids are scoped by it). */
export type Admission = Release & { readonly tenant: string };

@Injectable()
export class CallGate {
  constructor(
    @Inject(Authenticator) private readonly auth: Authenticator,
    @Inject(LimiterService) private readonly limiter: LimiterService,
  ) {}

  /** `scope` null: any valid key will do. */
  async admit(authorization: string | undefined, scope: ApiKeyScope | null, cost = 1): Promise<Admission> {
    const principal = await this.auth.authenticate(authorization);
    if (scope !== null) requireScope(principal, scope);
    const release = await this.limiter.admit(principal, cost);
    return Object.assign(() => release(), { tenant: principal.id });
  }
}
