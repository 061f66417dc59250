/**
 * Gateway configuration: the only place that knows the environment variable names. `parseConfig` is pure
 * (it takes the env as an argument) and throws a ConfigError naming the bad variable.
 */

export interface GatewayConfig {
  readonly port: number;
  readonly host: string;
  readonly grpcPort: number;
  readonly databaseUrl: string;
  readonly redisUrl: string;
  /** host:port of every worker the gateway keeps a Session with. */
  readonly workerAddrs: readonly string[];
  /** Empty means no authentication. */
  readonly apiKeys: readonly string[];
}

export class ConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const DEFAULTS = {
  PORT: '8080',
  HOST: '127.0.0.1',
  GRPC_PORT: '50051',
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/inlaid',
  REDIS_URL: 'redis://127.0.0.1:6379',
  WORKER_ADDRS: '127.0.0.1:50061',
} as const;

function read(env: Env, name: keyof typeof DEFAULTS): string {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? DEFAULTS[name] : value;
}

function parsePort(name: string, raw: string): number {
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a port number, got "${raw}"`);
  const port = Number(raw);
  if (port > 65535) throw new ConfigError(name, `port ${port} is out of range 0..65535`);
  return port;
}

function parseUrl(name: string, raw: string, protocols: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, `not a valid URL: "${raw}"`);
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL, got "${url.protocol}"`);
  }
  return raw;
}

function splitList(raw: string | undefined): string[] {
  return (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function parseWorkerAddrs(raw: string): string[] {
  const addrs = splitList(raw);
  if (addrs.length === 0) throw new ConfigError('WORKER_ADDRS', 'at least one host:port is required');
  for (const addr of addrs) {
    const match = /^(.+):(\d+)$/.exec(addr);
    if (match === null) throw new ConfigError('WORKER_ADDRS', `expected host:port, got "${addr}"`);
    parsePort('WORKER_ADDRS', match[2] ?? '');
  }
  return addrs;
}

export function parseConfig(env: Env): GatewayConfig {
  return Object.freeze({
    port: parsePort('PORT', read(env, 'PORT')),
    host: read(env, 'HOST'),
    grpcPort: parsePort('GRPC_PORT', read(env, 'GRPC_PORT')),
    databaseUrl: parseUrl('DATABASE_URL', read(env, 'DATABASE_URL'), ['postgres:', 'postgresql:']),
    redisUrl: parseUrl('REDIS_URL', read(env, 'REDIS_URL'), ['redis:', 'rediss:']),
    workerAddrs: Object.freeze(parseWorkerAddrs(read(env, 'WORKER_ADDRS'))),
    apiKeys: Object.freeze(splitList(env['INLAID_API_KEYS'])),
  });
}
