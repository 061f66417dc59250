import { resolve } from 'node:path';
import { parseTasksConfig } from './tasks-config';

describe('parseTasksConfig', () => {
  it('defaults to assets/adapters plus the data dir', () => {
    const c = parseTasksConfig({});
    expect(c.adapterRoots).toEqual([resolve('assets/adapters'), resolve('data')]);
    expect(c.queuePrefix).toBe('inlaid');
  });

  it('reads several roots and names the bad variable', () => {
    const c = parseTasksConfig({ INLAID_ADAPTER_ROOT: '/a, /b', INLAID_DATA_DIR: '/d' });
    expect(c.adapterRoots).toEqual(['/a', '/b', '/d']);
    expect(() => parseTasksConfig({ INLAID_QUEUE_PREFIX: 'a:b' })).toThrow('INLAID_QUEUE_PREFIX');
    expect(() => parseTasksConfig({ INLAID_MAX_UPLOAD_BYTES: '-1' })).toThrow('INLAID_MAX_UPLOAD_BYTES');
  });
});
