/** Which scope each route needs (pure). Health probes are public; unknown routes need any valid key. */
import { API_KEY_SCOPES, type ApiKeyScope } from '@inlaid/db';
import { InlaidError } from '../common/inlaid-error';
import type { Principal } from './principal';

export type RouteAccess = { readonly kind: 'public' } | { readonly kind: 'scope'; readonly scope: ApiKeyScope } | { readonly kind: 'any' };

const PUBLIC_PATHS = new Set(['/healthz', '/readyz']);

function under(path: string, root: string): boolean {
  return path === root || path.startsWith(`${root}/`);
}

export function routeAccess(path: string): RouteAccess {
  if (PUBLIC_PATHS.has(path)) return { kind: 'public' };
  if (under(path, '/v1/completions') || under(path, '/v1/chat/completions') || under(path, '/v1/models') || path === '/tokenize' || path === '/detokenize') {
    return { kind: 'scope', scope: 'inference' };
  }
  if (under(path, '/v1/tasks') || under(path, '/v1/files') || path === '/v1/load_lora_adapter' || path === '/v1/unload_lora_adapter') return { kind: 'scope', scope: 'tasks:admin' };
  if (under(path, '/dashboard') || under(path, '/metrics')) return { kind: 'scope', scope: 'dashboard:read' };
  return { kind: 'any' };
}

export function parseScopes(raw: string): ApiKeyScope[] {
  const scopes = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (scopes.length === 0) throw new Error(`at least one scope is required (${API_KEY_SCOPES.join(', ')})`);
  for (const s of scopes) {
    if (!(API_KEY_SCOPES as readonly string[]).includes(s)) throw new Error(`unknown scope "${s}" (expected ${API_KEY_SCOPES.join(', ')})`);
  }
  return [...new Set(scopes)] as ApiKeyScope[];
}

/** Throws PERMISSION_DENIED unless the principal holds the scope. */
export function requireScope(principal: Principal, scope: ApiKeyScope): void {
  if (!principal.scopes.has(scope)) {
    throw InlaidError.permissionDenied(`This API key does not have the '${scope}' scope.`);
  }
}
