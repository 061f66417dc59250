import { parseDashboardConfig } from './dashboard-config';

describe('dashboard config', () => {
  it('defaults to a week of minute rollups swept hourly, hour rollups and records kept forever', () => {
    expect(parseDashboardConfig({})).toEqual({ minuteRollupDays: 7, hourRollupDays: 0, recordDays: 0, sweepS: 3600 });
  });

  it('reads every variable; 0 days keeps minute rollups forever', () => {
    expect(parseDashboardConfig({
      INLAID_ROLLUP_MINUTE_DAYS: ' 0 ', INLAID_ROLLUP_HOUR_DAYS: '90', INLAID_RECORD_DAYS: '30', INLAID_ROLLUP_SWEEP_S: '60',
    })).toEqual({ minuteRollupDays: 0, hourRollupDays: 90, recordDays: 30, sweepS: 60 });
  });

  it.each([
    [{ INLAID_ROLLUP_MINUTE_DAYS: '-1' }, 'INLAID_ROLLUP_MINUTE_DAYS'],
    [{ INLAID_ROLLUP_MINUTE_DAYS: '1.5' }, 'INLAID_ROLLUP_MINUTE_DAYS'],
    [{ INLAID_ROLLUP_HOUR_DAYS: 'ten' }, 'INLAID_ROLLUP_HOUR_DAYS'],
    [{ INLAID_RECORD_DAYS: '-3' }, 'INLAID_RECORD_DAYS'],
    [{ INLAID_ROLLUP_SWEEP_S: '0' }, 'INLAID_ROLLUP_SWEEP_S'],
  ])('refuses %j naming %s', (env, name) => {
    expect(() => parseDashboardConfig(env)).toThrow(name);
  });
});
