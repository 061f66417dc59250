import { parseDashboardConfig } from './dashboard-config';
import { parseSchedulingConfig } from './scheduling-config';
import { parseTasksConfig } from './tasks-config';
import { ConfigError, parseConfig, WORKER_TLS_ENV } from './gateway-config';

describe('parseConfig', () => {
  it('applies the documented defaults', () => {
    const config = parseConfig({});
    expect(config).toEqual({
      port: 8080,
      host: '127.0.0.1',
      grpcPort: 50051,
      databaseUrl: 'postgres://postgres@127.0.0.1:5432/inlaid',
      databasePool: 10,
      redisUrl: 'redis://127.0.0.1:6379',
      workerAddrs: ['127.0.0.1:50061'],
      apiKeys: [],
      authRequired: false,
      tls: null,
      workerTls: null,
      tasks: parseTasksConfig({}),
      scheduling: parseSchedulingConfig({}),
      dashboard: parseDashboardConfig({}),
    });
  });

  it('reads TLS paths and the auth mode, refusing half-configured pairs', () => {
    const c = parseConfig({ INLAID_TLS_CERT: 'c.pem', INLAID_TLS_KEY: 'k.pem', INLAID_GATEWAY_TLS_CA: 'ca.pem', INLAID_AUTH: 'required' });
    expect(c.tls).toEqual({ certPath: 'c.pem', keyPath: 'k.pem' });
    expect(c.workerTls).toEqual({ caPath: 'ca.pem', certPath: null, keyPath: null });
    expect(c.authRequired).toBe(true);
    expect(() => parseConfig({ INLAID_TLS_CERT: 'c.pem' })).toThrow(ConfigError);
    expect(() => parseConfig({ INLAID_GATEWAY_TLS_CERT: 'c.pem', INLAID_GATEWAY_TLS_KEY: 'k.pem' })).toThrow(/^INLAID_GATEWAY_TLS_CA: required/);
    expect(() => parseConfig({ INLAID_GATEWAY_TLS_CA: 'ca.pem', INLAID_GATEWAY_TLS_CERT: 'c.pem' })).toThrow(/^INLAID_GATEWAY_TLS_KEY: set both/);
    expect(() => parseConfig({ INLAID_AUTH: 'maybe' })).toThrow(/INLAID_AUTH/);
  });

  it('reads the worker-link mTLS files from INLAID_GATEWAY_TLS_*, leaving INLAID_WORKER_TLS_* to the worker', () => {
    const files = { INLAID_GATEWAY_TLS_CA: 'ca.pem', INLAID_GATEWAY_TLS_CERT: 'client.pem', INLAID_GATEWAY_TLS_KEY: 'client.key' };
    const workerServer = { INLAID_WORKER_TLS_CERT: 'server.pem', INLAID_WORKER_TLS_KEY: 'server.key', INLAID_WORKER_TLS_CLIENT_CA: 'ca.pem' };
    expect(parseConfig({ ...files, ...workerServer }).workerTls).toEqual({ caPath: 'ca.pem', certPath: 'client.pem', keyPath: 'client.key' });
    expect(parseConfig(workerServer).workerTls).toBeNull();
  });

  it('refuses the old INLAID_WORKER_TLS_CA, naming the variables that replace it', () => {
    const old = { INLAID_WORKER_TLS_CA: 'ca.pem', INLAID_WORKER_TLS_CERT: 'c.pem', INLAID_WORKER_TLS_KEY: 'k.pem' };
    expect(() => parseConfig(old)).toThrow(ConfigError);
    expect(() => parseConfig(old)).toThrow(/^INLAID_WORKER_TLS_CA: renamed: the gateway reads INLAID_GATEWAY_TLS_CA .* INLAID_GATEWAY_TLS_CERT\/INLAID_GATEWAY_TLS_KEY/);
    expect(() => parseConfig({ INLAID_WORKER_TLS_CA: 'ca.pem', INLAID_GATEWAY_TLS_CA: 'ca.pem' })).toThrow(/INLAID_WORKER_TLS_CA: renamed/);
  });

  it('reads no INLAID_WORKER_* variable but the refused INLAID_WORKER_TLS_CA (the worker owns that prefix)', () => {
    const read = new Set<string>();
    const recording = new Proxy({} as Record<string, string | undefined>, {
      get: (_target, name) => {
        if (typeof name === 'string') read.add(name);
        return undefined;
      },
    });
    parseConfig(recording);
    expect([...read].filter((n) => n.startsWith('INLAID_WORKER_'))).toEqual([WORKER_TLS_ENV.renamedCa]);
    for (const n of [WORKER_TLS_ENV.ca, WORKER_TLS_ENV.cert, WORKER_TLS_ENV.key]) expect(read.has(n)).toBe(true);
  });

  it('reads overrides and splits lists', () => {
    const config = parseConfig({
      PORT: '9000',
      GRPC_PORT: '0',
      WORKER_ADDRS: 'a:1, b:2,',
      INLAID_API_KEYS: 'k1,k2',
      DATABASE_URL: 'postgresql://u@h/db',
      INLAID_DB_POOL: '24',
    });
    expect(config.databasePool).toBe(24);
    expect(config.port).toBe(9000);
    expect(config.grpcPort).toBe(0);
    expect(config.workerAddrs).toEqual(['a:1', 'b:2']);
    expect(config.apiKeys).toEqual(['k1', 'k2']);
    expect(config.databaseUrl).toBe('postgresql://u@h/db');
  });

  it.each([
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ GRPC_PORT: '-1' }, 'GRPC_PORT'],
    [{ DATABASE_URL: 'mysql://x/y' }, 'DATABASE_URL'],
    [{ REDIS_URL: 'not a url' }, 'REDIS_URL'],
    [{ WORKER_ADDRS: 'nohostport' }, 'WORKER_ADDRS'],
    [{ WORKER_ADDRS: ' , ' }, 'WORKER_ADDRS'],
    [{ INLAID_DB_POOL: '1' }, 'INLAID_DB_POOL'],
    [{ INLAID_DB_POOL: '2' }, 'INLAID_DB_POOL'], // below MIN_DB_POOL: a pass's lock and a locked section would leave nothing
    [{ INLAID_DB_POOL: 'many' }, 'INLAID_DB_POOL'],
  ])('rejects %j naming %s', (env, variable) => {
    expect(() => parseConfig(env)).toThrow(ConfigError);
    try {
      parseConfig(env);
    } catch (err) {
      expect((err as ConfigError).variable).toBe(variable);
    }
  });
});
