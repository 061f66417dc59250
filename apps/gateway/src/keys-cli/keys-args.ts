/**
 * Parses `keys create --name x --scopes inference,dashboard:read [--rpm 600] [--concurrency 8]`,
 * `keys list [--json]` and `keys revoke <id|prefix>` (pure; throws UsageError with a message for the user).
 */
import { parseScopes } from '../auth/scopes';
import type { KeySpec } from '../auth/api-key-repo';

export type KeysCommand =
  | { readonly kind: 'create'; readonly spec: KeySpec }
  | { readonly kind: 'list'; readonly json: boolean }
  | { readonly kind: 'revoke'; readonly target: string };

export class UsageError extends Error {}

export const USAGE = `usage:
  npm run keys -- create --name NAME --scopes inference,tasks:admin,dashboard:read [--rpm N] [--concurrency N]
  npm run keys -- list [--json]
  npm run keys -- revoke <id | prefix>`;

const NAME = /^[\w .@:-]{1,64}$/;

function flags(args: readonly string[], allowed: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const flag = args[i] ?? '';
    if (!flag.startsWith('--') || !allowed.includes(flag.slice(2))) throw new UsageError(`unknown argument "${flag}"`);
    const value = args[i + 1];
    if (value === undefined || value.startsWith('--')) throw new UsageError(`${flag} needs a value`);
    out.set(flag.slice(2), value);
    i++;
  }
  return out;
}

function positiveInt(name: string, raw: string | undefined): number | null {
  if (raw === undefined) return null;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 1_000_000) throw new UsageError(`--${name} must be an integer in 1..1000000`);
  return Number(raw);
}

function parseCreate(args: readonly string[]): KeysCommand {
  const f = flags(args, ['name', 'scopes', 'rpm', 'concurrency']);
  const name = f.get('name');
  if (name === undefined || !NAME.test(name)) throw new UsageError('--name is required: 1-64 letters, digits, spaces or . @ : - _');
  let scopes;
  try {
    scopes = parseScopes(f.get('scopes') ?? '');
  } catch (err) {
    throw new UsageError(`--scopes: ${(err as Error).message}`);
  }
  return { kind: 'create', spec: { name, scopes, rateLimitRpm: positiveInt('rpm', f.get('rpm')), concurrencyLimit: positiveInt('concurrency', f.get('concurrency')) } };
}

export function parseKeysArgs(argv: readonly string[]): KeysCommand {
  const [command, ...rest] = argv;
  if (command === 'create') return parseCreate(rest);
  if (command === 'list') {
    if (rest.length > 1 || (rest.length === 1 && rest[0] !== '--json')) throw new UsageError('list takes only --json');
    return { kind: 'list', json: rest[0] === '--json' };
  }
  if (command === 'revoke') {
    if (rest.length !== 1 || rest[0] === undefined || rest[0].startsWith('--')) throw new UsageError('revoke takes one id or prefix');
    return { kind: 'revoke', target: rest[0] };
  }
  throw new UsageError(command === undefined ? 'a command is required' : `unknown command "${command}"`);
}
