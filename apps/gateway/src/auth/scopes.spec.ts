import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import type { Principal } from './principal';
import { parseScopes, requireScope, routeAccess } from './scopes';

describe('routeAccess', () => {
  it.each([
    ['/healthz', { kind: 'public' }],
    ['/readyz', { kind: 'public' }],
    ['/v1/completions', { kind: 'scope', scope: 'inference' }],
    ['/v1/chat/completions', { kind: 'scope', scope: 'inference' }],
    ['/v1/models/sql', { kind: 'scope', scope: 'inference' }],
    ['/tokenize', { kind: 'scope', scope: 'inference' }],
    ['/detokenize', { kind: 'scope', scope: 'inference' }],
    ['/tokenizex', { kind: 'any' }],
    ['/v1/tasks', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/tasks/sql/adapter', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/files', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/files/file-0123456789abcdef', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/load_lora_adapter', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/unload_lora_adapter', { kind: 'scope', scope: 'tasks:admin' }],
    ['/v1/filesx', { kind: 'any' }],
    ['/dashboard', { kind: 'scope', scope: 'dashboard:read' }],
    ['/dashboard/api/tasks', { kind: 'scope', scope: 'dashboard:read' }],
    ['/metrics', { kind: 'scope', scope: 'dashboard:read' }],
    ['/v1/tasksx', { kind: 'any' }],
    ['/healthz/x', { kind: 'any' }],
  ])('%s -> %j', (path, access) => {
    expect(routeAccess(path)).toEqual(access);
  });
});

describe('scopes', () => {
  it('parses and deduplicates a scope list, refusing unknown or empty ones', () => {
    expect(parseScopes('inference, dashboard:read,inference')).toEqual(['inference', 'dashboard:read']);
    expect(() => parseScopes('inference,root')).toThrow(/unknown scope "root"/);
    expect(() => parseScopes(' , ')).toThrow(/at least one/);
  });

  it('denies a missing scope with PERMISSION_DENIED', () => {
    const p: Principal = { id: 'k', name: 'k', scopes: new Set(['inference']), rateLimitRpm: null, concurrencyLimit: null };
    expect(() => requireScope(p, 'inference')).not.toThrow();
    try {
      requireScope(p, 'tasks:admin');
      throw new Error('allowed');
    } catch (err) {
      expect((err as InlaidError).status).toBe(status.PERMISSION_DENIED);
    }
  });
});
