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

  it('reads the reconciliation period, its grace and the failed-files TTL', () => {
    expect(parseTasksConfig({})).toMatchObject({ reconcileIntervalMs: 30_000, reconcileGraceMs: 10_000, failedFilesTtlMs: 3_600_000 });
    const c = parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: '0', INLAID_ONBOARD_RECONCILE_GRACE_MS: '500', INLAID_FAILED_FILES_TTL_S: '2' });
    expect(c).toMatchObject({ reconcileIntervalMs: 0, reconcileGraceMs: 500, failedFilesTtlMs: 2000 });
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: '50' })).toThrow('INLAID_ONBOARD_RECONCILE_MS');
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_GRACE_MS: '-1' })).toThrow('INLAID_ONBOARD_RECONCILE_GRACE_MS');
    expect(() => parseTasksConfig({ INLAID_FAILED_FILES_TTL_S: '1h' })).toThrow('INLAID_FAILED_FILES_TTL_S');
  });
});
