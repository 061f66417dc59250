import { resolve } from 'node:path';
import { MAX_RECONCILE_MS, MAX_TIMER_MS, parseTasksConfig, RECONCILE_JITTER } from './tasks-config';

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
    const c = parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: '0', INLAID_ONBOARD_RECONCILE_GRACE_MS: '500', INLAID_FAILED_FILES_TTL_S: '60' });
    expect(c).toMatchObject({ reconcileIntervalMs: 0, reconcileGraceMs: 500, failedFilesTtlMs: 60_000 });
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: '50' })).toThrow('INLAID_ONBOARD_RECONCILE_MS');
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_GRACE_MS: '-1' })).toThrow('INLAID_ONBOARD_RECONCILE_GRACE_MS');
    expect(() => parseTasksConfig({ INLAID_FAILED_FILES_TTL_S: '1h' })).toThrow('INLAID_FAILED_FILES_TTL_S');
  });

  it('bounds the period (a timer fires at once past 2^31 - 1 ms), the grace and the TTL, naming the variable', () => {
    expect(MAX_RECONCILE_MS).toBe(1_789_569_705);
    expect(MAX_RECONCILE_MS * (1 + RECONCILE_JITTER)).toBeLessThanOrEqual(MAX_TIMER_MS);
    const top = parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: String(MAX_RECONCILE_MS), INLAID_ONBOARD_RECONCILE_GRACE_MS: '86400000', INLAID_FAILED_FILES_TTL_S: '315360000' });
    expect(top).toMatchObject({ reconcileIntervalMs: MAX_RECONCILE_MS, reconcileGraceMs: 86_400_000, failedFilesTtlMs: 315_360_000_000 });
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: String(MAX_RECONCILE_MS + 1) })).toThrow(/INLAID_ONBOARD_RECONCILE_MS: expected 0 \(off\) or 100 to 1789569705 ms/);
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_MS: '99999999999999999999' })).toThrow('INLAID_ONBOARD_RECONCILE_MS');
    expect(() => parseTasksConfig({ INLAID_ONBOARD_RECONCILE_GRACE_MS: '86400001' })).toThrow(/INLAID_ONBOARD_RECONCILE_GRACE_MS: expected 0 to 86400000 ms/);
    expect(() => parseTasksConfig({ INLAID_FAILED_FILES_TTL_S: '315360001' })).toThrow(/INLAID_FAILED_FILES_TTL_S: expected 60 to 315360000 s/);
    for (const ttl of ['0', '1', '59']) expect(() => parseTasksConfig({ INLAID_FAILED_FILES_TTL_S: ttl })).toThrow('INLAID_FAILED_FILES_TTL_S');
  });
});
