/**
 * Gateway configuration: the only place that knows the environment variable names. `parseConfig` is pure
 * (it takes the env as an argument) and throws a ConfigError naming the bad variable.
 */
import { DashboardConfig, parseDashboardConfig } from './dashboard-config';
import { parseSchedulingConfig, SchedulingConfig } from './scheduling-config';
import { parseTasksConfig, TasksConfig } from './tasks-config';

export interface GatewayConfig {
  readonly port: number;
  readonly host: string;
  readonly grpcPort: number;
  readonly databaseUrl: string;
  /**
   * INLAID_DB_POOL: Postgres connections the gateway may hold (default 10, at least MIN_DB_POOL). Onboarding steps
   * and DELETE hold one each for the length of a worker call (task-store.service.ts `locked`), and a reconciliation
   * pass holds one for as long as it runs (its lock, `reconciling`), beside request records and the dashboard.
   */
  readonly databasePool: number;
  readonly redisUrl: string;
  /** host:port of every worker the gateway keeps a Session with. */
  readonly workerAddrs: readonly string[];
  /** Bootstrap admin keys (every scope, no limits). Empty and INLAID_AUTH unset means no authentication. */
  readonly apiKeys: readonly string[];
  /** INLAID_AUTH=required: demand a key even with no bootstrap keys (keys then come from Postgres only). */
  readonly authRequired: boolean;
  /** PEM paths for TLS on the client HTTP and gRPC endpoints (both set, or neither). */
  readonly tls: TlsFiles | null;
  /** PEM paths for mTLS on the gateway->worker link (WORKER_TLS_ENV): the CA that signed the workers, our client cert/key. */
  readonly workerTls: WorkerTlsFiles | null;
  /** Task onboarding (tasks-config.ts). */
  readonly tasks: TasksConfig;
  /** Request scheduling (scheduling-config.ts). */
  readonly scheduling: SchedulingConfig;
  /** Dashboard rollup retention (dashboard-config.ts). */
  readonly dashboard: DashboardConfig;
}

export interface TlsFiles {
  readonly certPath: string;
  readonly keyPath: string;
}

export interface WorkerTlsFiles {
  readonly caPath: string;
  readonly certPath: string | null;
  readonly keyPath: string | null;
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

function opt(env: Env, name: string): string | null {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? null : v;
}

function parseTls(env: Env): TlsFiles | null {
  const certPath = opt(env, 'INLAID_TLS_CERT');
  const keyPath = opt(env, 'INLAID_TLS_KEY');
  if ((certPath === null) !== (keyPath === null)) {
    throw new ConfigError(certPath === null ? 'INLAID_TLS_CERT' : 'INLAID_TLS_KEY', 'set both INLAID_TLS_CERT and INLAID_TLS_KEY, or neither');
  }
  return certPath === null || keyPath === null ? null : { certPath, keyPath };
}

/**
 * The gateway's variables for the gateway->worker link. Not INLAID_WORKER_*: the worker reads every flag `--x-y`
 * from INLAID_WORKER_X_Y, so under `npm start` (one environment for both) INLAID_WORKER_TLS_CERT/_KEY are the
 * worker's server certificate. INLAID_WORKER_TLS_CA was the gateway's; it is refused (the worker never reads it),
 * so an old configuration stops the gateway with the new names instead of silently losing its client certificate.
 */
export const WORKER_TLS_ENV = {
  ca: 'INLAID_GATEWAY_TLS_CA',
  cert: 'INLAID_GATEWAY_TLS_CERT',
  key: 'INLAID_GATEWAY_TLS_KEY',
  renamedCa: 'INLAID_WORKER_TLS_CA',
} as const;

function parseWorkerTls(env: Env): WorkerTlsFiles | null {
  const { ca, cert, key, renamedCa } = WORKER_TLS_ENV;
  if (opt(env, renamedCa) !== null) {
    throw new ConfigError(renamedCa, `renamed: the gateway reads ${ca} (the CA of the workers' certificates) and ${cert}/${key} (its client certificate for mTLS); INLAID_WORKER_TLS_CERT/_KEY/_CLIENT_CA are the worker's own --tls-cert/--tls-key/--tls-client-ca (under npm start unset them unless meant for the worker)`);
  }
  const caPath = opt(env, ca);
  const certPath = opt(env, cert);
  const keyPath = opt(env, key);
  if ((certPath === null) !== (keyPath === null)) {
    throw new ConfigError(certPath === null ? cert : key, `set both ${cert} and ${key} (the gateway's client certificate for the worker link), or neither`);
  }
  if (caPath === null) {
    if (certPath !== null) throw new ConfigError(ca, `required when ${cert} is set (for TLS on the client endpoints use INLAID_TLS_CERT/_KEY)`);
    return null;
  }
  return { caPath, certPath, keyPath };
}

/**
 * The smallest INLAID_DB_POOL: a reconciliation pass holds one connection while it runs (its lock), the failure
 * it records holds a second across a worker unload (a locked section), and an onboarding step or DELETE needs a
 * third meanwhile.
 */
export const MIN_DB_POOL = 3;

function parsePool(env: Env): number {
  const raw = opt(env, 'INLAID_DB_POOL') ?? '10';
  if (!/^\d+$/.test(raw) || Number(raw) < MIN_DB_POOL || Number(raw) > 1000) {
    throw new ConfigError('INLAID_DB_POOL', `expected an integer from ${MIN_DB_POOL} to 1000 (a reconciliation pass holds one connection while it runs, a locked section one more), got "${raw}"`);
  }
  return Number(raw);
}

function parseAuthMode(env: Env): boolean {
  const mode = opt(env, 'INLAID_AUTH') ?? 'auto';
  if (mode !== 'auto' && mode !== 'required') throw new ConfigError('INLAID_AUTH', `expected auto or required, got "${mode}"`);
  return mode === 'required';
}

export function parseConfig(env: Env): GatewayConfig {
  return Object.freeze({
    port: parsePort('PORT', read(env, 'PORT')),
    host: read(env, 'HOST'),
    grpcPort: parsePort('GRPC_PORT', read(env, 'GRPC_PORT')),
    databaseUrl: parseUrl('DATABASE_URL', read(env, 'DATABASE_URL'), ['postgres:', 'postgresql:']),
    databasePool: parsePool(env),
    redisUrl: parseUrl('REDIS_URL', read(env, 'REDIS_URL'), ['redis:', 'rediss:']),
    workerAddrs: Object.freeze(parseWorkerAddrs(read(env, 'WORKER_ADDRS'))),
    apiKeys: Object.freeze(splitList(env['INLAID_API_KEYS'])),
    authRequired: parseAuthMode(env),
    tls: parseTls(env),
    workerTls: parseWorkerTls(env),
    tasks: parseTasksConfig(env),
    scheduling: parseSchedulingConfig(env),
    dashboard: parseDashboardConfig(env),
  });
}
