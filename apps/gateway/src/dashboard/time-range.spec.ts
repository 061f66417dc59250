import { chartStep, parseRange, planQuery, planSegments, RangeError400, stepStarts } from './time-range';

const now = new Date('2026-11-29T13:47:30Z');
const H = 3_600_000;

describe('time ranges', () => {
  it('parses relative ranges back from now, rounded out to minutes', () => {
    const r = parseRange({ range: '1h' }, now);
    expect(r.from.toISOString()).toBe('2026-11-29T12:47:00.000Z');
    expect(r.to.toISOString()).toBe('2026-11-29T13:48:00.000Z');
    expect(parseRange({}, now).from.toISOString()).toBe('2026-11-29T12:47:00.000Z');
  });

  it.each([
    [{ range: '1w' }, /range: expected/],
    [{ from: '2026-01-01' }, /give both/],
    [{ from: 'yesterday', to: '2026-01-01' }, /from: not a date/],
    [{ from: '2026-01-02', to: '2026-01-01' }, /empty/],
    [{ range: '400d' }, /longer than 90 days/],
    [{ range: '200000000d' }, /longer than 90 days/], // before the earliest Date: NaN
    [{ range: `${'9'.repeat(400)}m` }, /longer than 90 days/], // Infinity
  ])('refuses %j', (query, message) => {
    expect(() => parseRange(query, now)).toThrow(RangeError400);
    expect(() => parseRange(query, now)).toThrow(message);
  });

  it('answers up to 3 h to the minute, and widens longer ranges to whole hours', () => {
    const short = planQuery(parseRange({ range: '3h' }, now));
    expect(short.precision).toBe('minute');
    expect(short.segments.map((s) => [s.resolutionS, s.from.toISOString().slice(11, 16), s.to.toISOString().slice(11, 16)]))
      .toEqual([[60, '10:47', '11:00'], [3600, '11:00', '13:00'], [60, '13:00', '13:48']]);
    const plan = planQuery(parseRange({ range: '6h' }, now));
    expect(plan.precision).toBe('hour');
    expect(plan.range.from.toISOString()).toBe('2026-11-29T07:00:00.000Z');
    expect(plan.range.to.toISOString()).toBe('2026-11-29T14:00:00.000Z');
    expect(plan.segments).toEqual([{ resolutionS: 3600, ...plan.range }]);
    const quarter = planQuery(parseRange({ range: '15m' }, now));
    expect(quarter.segments).toEqual([{ resolutionS: 60, ...quarter.range }]);
  });

  it('takes whole days from the daily rollups and the ragged hours from the hourly ones', () => {
    const from = new Date('2026-11-20T05:00:00Z');
    const to = new Date('2026-11-29T14:00:00Z');
    const segs = planSegments({ from, to }).map((s) => [s.resolutionS, s.from.toISOString().slice(5, 13), s.to.toISOString().slice(5, 13)]);
    expect(segs).toEqual([[3600, '11-20T05', '11-21T00'], [86400, '11-21T00', '11-29T00'], [3600, '11-29T00', '11-29T14']]);
    const covered = planSegments({ from, to }).reduce((a, s) => a + s.to.getTime() - s.from.getTime(), 0);
    expect(covered).toBe(to.getTime() - from.getTime());
    expect(() => planSegments({ from: new Date(from.getTime() + 60_000), to })).toThrow(/hour-aligned/);
    expect(() => planSegments({ from: new Date(from.getTime() + 1000), to }, 60)).toThrow(/minute-aligned/);
    const fine = planSegments({ from: new Date('2026-11-20T05:07:00Z'), to: new Date('2026-11-22T01:02:00Z') }, 60)
      .map((s) => [s.resolutionS, s.from.toISOString().slice(8, 16), s.to.toISOString().slice(8, 16)]);
    expect(fine).toEqual([[60, '20T05:07', '20T06:00'], [3600, '20T06:00', '21T00:00'], [86400, '21T00:00', '22T00:00'],
      [3600, '22T00:00', '22T01:00'], [60, '22T01:00', '22T01:02']]);
  });

  it('picks a chart step that keeps at most 120 points', () => {
    expect(chartStep({ from: new Date(0), to: new Date(H) })).toEqual({ stepS: 60, resolutionS: 60 });
    expect(chartStep({ from: new Date(0), to: new Date(24 * H) })).toEqual({ stepS: 900, resolutionS: 60 });
    expect(chartStep({ from: new Date(0), to: new Date(7 * 24 * H) })).toEqual({ stepS: 10800, resolutionS: 3600 });
    expect(chartStep({ from: new Date(0), to: new Date(90 * 24 * H) })).toEqual({ stepS: 86400, resolutionS: 86400 });
    const starts = stepStarts({ from: new Date('2026-11-29T10:07:00Z'), to: new Date('2026-11-29T10:31:00Z') }, 600);
    expect(starts.map((d) => d.toISOString().slice(11, 16))).toEqual(['10:00', '10:10', '10:20', '10:30']);
  });
});
