import type { RequestRecord } from '@inlaid/db';
import { GatewayMetrics } from './gateway-metrics';
import { TaskLabeler } from './task-labeler';

const targets = { ttftMs: 200, tpotMs: 20, isDefault: false };

function row(task: string, ttftMs: number, status: RequestRecord['status'] = 'completed'): RequestRecord {
  const arrival = new Date(1_000_000);
  const firstToken = new Date(arrival.getTime() + ttftMs);
  return { id: `${task}-${ttftMs}`, task, api: 'completions', arrival, firstToken, finish: new Date(firstToken.getTime() + 90), tokensIn: 5, tokensOut: 10, status, finishReason: 'stop', error: null, worker: 'w:1' };
}

describe('GatewayMetrics', () => {
  it('counts requests, tokens, latency histograms and SLO verdicts per task', () => {
    const m = new GatewayMetrics(new TaskLabeler({ maxLabelled: 10, capacity: 100, hysteresis: 2 }));
    m.observe(row('sql', 100), targets, true);
    m.observe(row('sql', 300), targets, false);
    m.observe(row('sql', 50, 'aborted'), targets, null);
    const text = m.registry.render();
    expect(text).toContain('inlaid_requests_total{task="sql",status="completed"} 2');
    expect(text).toContain('inlaid_requests_total{task="sql",status="aborted"} 1');
    expect(text).toContain('inlaid_tokens_total{task="sql",kind="completion"} 30');
    expect(text).toContain('inlaid_slo_requests_total{task="sql",result="met"} 1');
    expect(text).toContain('inlaid_slo_requests_total{task="sql",result="missed"} 1');
    expect(text).toContain('inlaid_slo_attainment_ratio{task="sql"} 0.5');
    expect(text).toContain('inlaid_ttft_seconds_bucket{task="sql",le="0.2"} 1');
    expect(text).toContain('inlaid_ttft_seconds_count{task="sql"} 2');
    expect(text).toContain('inlaid_tpot_seconds_sum{task="sql"} 0.02');
    expect(text).toContain('inlaid_adapter_requests_total{result="hit"} 1');
  });

  it('keeps the task label bounded with thousands of tasks and drops demoted series', () => {
    const m = new GatewayMetrics(new TaskLabeler({ maxLabelled: 5, capacity: 50, hysteresis: 2 }));
    for (let i = 0; i < 3000; i++) m.observe(row(`t${i}`, 10), targets, null);
    for (let i = 0; i < 100; i++) m.observe(row('hot', 10), targets, null);
    const tasks = (text: string) => new Set([...text.matchAll(/inlaid_requests_total\{task="([^"]+)"/g)].map((x) => x[1]));
    expect(tasks(m.registry.render())).toEqual(new Set(['t0', 't1', 't2', 't3', 't4', 'other']));
    expect(m.registry.render()).toContain('inlaid_requests_total{task="other",status="completed"} 3095');
    const { promoted } = m.rerank();
    expect(promoted).toContain('hot');
    const after = tasks(m.registry.render());
    expect(after.size).toBeLessThanOrEqual(6);
    m.observe(row('hot', 10), targets, null);
    expect(m.registry.render()).toContain('inlaid_requests_total{task="hot",status="completed"} 1');
  });

  it('exports worker state and open onboarding jobs', () => {
    const m = new GatewayMetrics(new TaskLabeler());
    m.observe(row('sql', 10), targets, null);
    m.setWorkers([{ addr: 'w:1', workerId: 'w0', ready: true, inFlight: 3, running: 2, waiting: 5, kvBlocksTotal: 100, kvBlocksUsed: 25, kvUsed: 0.25, stepsPerS: 40, residentAdapters: ['sql', 'poet'], lastError: null }]);
    m.setJobs([
      { id: 'j', task: 'new', kind: 'onboard', status: 'quantizing', stage: 'quantizing', fraction: 0.5, layersDone: 2, layersTotal: 4, stages: [], error: null, updatedAt: null },
      { id: 'k', task: 'old', kind: 'onboard', status: 'active', stage: null, fraction: 1, layersDone: null, layersTotal: null, stages: [], error: null, updatedAt: null },
    ]);
    const text = m.registry.render();
    expect(text).toContain('inlaid_queue_depth{worker="w:1"} 5');
    expect(text).toContain('inlaid_batch_size{worker="w:1"} 2');
    expect(text).toContain('inlaid_kv_cache_usage_ratio{worker="w:1"} 0.25');
    expect(text).toContain('inlaid_adapters_resident{worker="w:1"} 2');
    expect(text).toContain('inlaid_adapter_resident{worker="w:1",task="sql"} 1');
    expect(text).not.toContain('inlaid_adapter_resident{worker="w:1",task="poet"}');
    expect(text).toContain('inlaid_requantization_progress_ratio{task="new",stage="quantizing"} 0.5');
    expect(text).not.toContain('task="old"');
  });
});
