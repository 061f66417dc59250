import { ConfigError, parseConfig } from './gateway-config';

describe('parseConfig', () => {
  it('applies the documented defaults', () => {
    const config = parseConfig({});
    expect(config).toEqual({
      port: 8080,
      host: '127.0.0.1',
      grpcPort: 50051,
      databaseUrl: 'postgres://postgres@127.0.0.1:5432/inlaid',
      redisUrl: 'redis://127.0.0.1:6379',
      workerAddrs: ['127.0.0.1:50061'],
      apiKeys: [],
    });
  });

  it('reads overrides and splits lists', () => {
    const config = parseConfig({
      PORT: '9000',
      GRPC_PORT: '0',
      WORKER_ADDRS: 'a:1, b:2,',
      INLAID_API_KEYS: 'k1,k2',
      DATABASE_URL: 'postgresql://u@h/db',
    });
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
  ])('rejects %j naming %s', (env, variable) => {
    expect(() => parseConfig(env)).toThrow(ConfigError);
    try {
      parseConfig(env);
    } catch (err) {
      expect((err as ConfigError).variable).toBe(variable);
    }
  });
});
