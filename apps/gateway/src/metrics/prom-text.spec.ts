import { Counter, escapeLabelValue, Gauge, Histogram, Registry } from './prom-text';

describe('Prometheus text format', () => {
  it('renders counters, gauges and cumulative histograms exactly', () => {
    const reg = new Registry();
    const c = reg.register(new Counter('inlaid_requests_total', 'Finished requests.', ['task', 'status']));
    const g = reg.register(new Gauge('inlaid_queue_depth', 'Waiting.', ['worker']));
    const h = reg.register(new Histogram('inlaid_ttft_seconds', 'TTFT.', ['task'], [0.1, 0.5]));
    c.inc({ task: 'sql', status: 'completed' });
    c.inc({ task: 'sql', status: 'completed' }, 2);
    g.set({ worker: 'a:1' }, 4);
    h.observe({ task: 'sql' }, 0.05);
    h.observe({ task: 'sql' }, 0.3);
    h.observe({ task: 'sql' }, 2);
    expect(reg.render()).toBe(
      [
        '# HELP inlaid_requests_total Finished requests.',
        '# TYPE inlaid_requests_total counter',
        'inlaid_requests_total{task="sql",status="completed"} 3',
        '# HELP inlaid_queue_depth Waiting.',
        '# TYPE inlaid_queue_depth gauge',
        'inlaid_queue_depth{worker="a:1"} 4',
        '# HELP inlaid_ttft_seconds TTFT.',
        '# TYPE inlaid_ttft_seconds histogram',
        'inlaid_ttft_seconds_bucket{task="sql",le="0.1"} 1',
        'inlaid_ttft_seconds_bucket{task="sql",le="0.5"} 2',
        'inlaid_ttft_seconds_bucket{task="sql",le="+Inf"} 3',
        'inlaid_ttft_seconds_sum{task="sql"} 2.35',
        'inlaid_ttft_seconds_count{task="sql"} 3',
      ].join('\n') + '\n',
    );
  });

  it('escapes label values and drops series by label', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const c = new Counter('x_total', 'x', ['task']);
    c.inc({ task: 'a' });
    c.inc({ task: 'b' });
    c.removeWhere('task', 'a');
    expect(c.render()).not.toContain('task="a"');
    expect(c.get({ task: 'b' })).toBe(1);
  });

  it('refuses invalid names, missing labels and negative increments', () => {
    expect(() => new Counter('bad-name', 'x')).toThrow(/invalid metric name/);
    expect(() => new Gauge('g', 'x', ['le'])).toThrow(/invalid label/);
    expect(() => new Counter('c', 'x', ['task']).inc({})).toThrow(/missing label "task"/);
    expect(() => new Counter('c', 'x').inc({}, -1)).toThrow(/only goes up/);
    expect(() => new Histogram('h', 'x', [], [1, 1])).toThrow(/strictly increasing/);
    const reg = new Registry();
    reg.register(new Counter('c', 'x'));
    expect(() => reg.register(new Gauge('c', 'y'))).toThrow(/twice/);
  });
});
