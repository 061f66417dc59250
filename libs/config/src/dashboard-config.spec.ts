import { parseDashboardConfig } from './dashboard-config';

describe('dashboard config', () => {
  it('defaults to a week of minute rollups swept hourly', () => {
    expect(parseDashboardConfig({})).toEqual({ minuteRollupDays: 7, sweepS: 3600 });
  });

  it('reads both variables; 0 days keeps minute rollups forever', () => {
    expect(parseDashboardConfig({ INLAID_ROLLUP_MINUTE_DAYS: ' 0 ', INLAID_ROLLUP_SWEEP_S: '60' })).toEqual({ minuteRollupDays: 0, sweepS: 60 });
  });

  it.each([
    [{ INLAID_ROLLUP_MINUTE_DAYS: '-1' }, 'INLAID_ROLLUP_MINUTE_DAYS'],
    [{ INLAID_ROLLUP_MINUTE_DAYS: '1.5' }, 'INLAID_ROLLUP_MINUTE_DAYS'],
    [{ INLAID_ROLLUP_SWEEP_S: '0' }, 'INLAID_ROLLUP_SWEEP_S'],
  ])('refuses %j naming %s', (env, name) => {
    expect(() => parseDashboardConfig(env)).toThrow(name);
  });
});
