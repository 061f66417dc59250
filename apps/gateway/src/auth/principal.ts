/** Who a request is on behalf of, after authentication: scopes and the limits that apply to it. */
import type { ApiKeyScope } from '@inlaid/db';

export interface Principal {
  /** Stable id used for limits and logs (never the key): the ApiKey row id, or `bootstrap:<n>`. */
  readonly id: string;
  readonly name: string;
  readonly scopes: ReadonlySet<ApiKeyScope>;
  readonly rateLimitRpm: number | null;
  readonly concurrencyLimit: number | null;
}
