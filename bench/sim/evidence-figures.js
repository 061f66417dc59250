#!/usr/bin/env node
/**
 * Draws the evidence figures from bench/results/sim-evidence-<date>.json into docs/figures/*.svg:
 * SLO attainment and throughput vs request rate (one figure per scenario, one panel per task count, one
 * line per policy) and the ablation bars. Usage: node bench/sim/evidence-figures.js [results.json]
 * (default: the newest sim-evidence-*.json).
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { root } = require('./common');
const { linePanels, groupedBars } = require('./svg-chart');

const resultsDir = path.join(root, 'bench', 'results');
const input = process.argv[2] ?? path.join(resultsDir, fs.readdirSync(resultsDir).filter((f) => /^sim-evidence-.*\.json$/.test(f)).sort().pop() ?? '');
if (!fs.existsSync(input) || !fs.statSync(input).isFile()) throw new Error(`no evidence JSON found (${input}); run bench/sim/evidence.js first`);
const data = JSON.parse(fs.readFileSync(input, 'utf8'));
const outDir = path.join(root, 'docs', 'figures');
fs.mkdirSync(outDir, { recursive: true });

const POLICIES = ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq'];
const COLORS = { inlaid: '#d62728', fifo: '#1f77b4', 'fcfs-maxloras': '#2ca02c', mlfq: '#9467bd' };
const DASH = { mlfq: '5 3' };
const source = `from ${path.relative(root, input)}`;

function sweepFigure(sc, field, yLabel, extra) {
  const panels = data.tasks.map((tasks) => ({
    title: `${tasks} tasks`,
    series: POLICIES.map((policy) => ({
      name: policy,
      dash: DASH[policy],
      points: data.rows.filter((r) => r.scenario === sc.id && r.tasks === tasks && r.policy === policy).map((r) => [r.rate, r[field]]),
    })),
  }));
  const tag = sc.placeholder ? `${sc.label}: ESTIMATE, not measured` : `${sc.label}: fitted from MEASURED steps`;
  return linePanels({
    title: `${yLabel} vs request rate: ${sc.id}`,
    subtitle: `${tag}; KV ${sc.kv_blocks} blocks; SLO TTFT ${sc.slo.ttftS} s, TPOT ${sc.slo.tpotS * 1000} ms; simulator, same traces per point (${source})`,
    xLabel: 'request rate (req/s)',
    yLabel,
    panels,
    colors: COLORS,
    ...extra,
  });
}

const written = [];
const write = (name, svg) => {
  fs.writeFileSync(path.join(outDir, name), svg);
  written.push(path.join('docs', 'figures', name));
};
// Figures of a tagged sweep get the tag in their names, so sweeps of one day do not overwrite each other.
const suffix = data.tag ? `-${data.tag}` : '';
for (const sc of data.scenarios) {
  write(`sim-slo-${sc.id}${suffix}.svg`, sweepFigure(sc, 'slo_attainment', 'SLO attainment', { yMin: 0, yMax: 1 }));
  write(`sim-throughput-${sc.id}${suffix}.svg`, sweepFigure(sc, 'throughput_tok_s', 'throughput (tok/s)', { sharedY: false }));
  if (data.models !== undefined) {
    write(`sim-latency-${sc.id}${suffix}.svg`, sweepFigure(sc, 'mean_latency_s', 'mean latency (s)', { sharedY: false }));
    write(`sim-jct-${sc.id}${suffix}.svg`, sweepFigure(sc, 'jct_s', 'JCT (s)', { sharedY: false }));
  }
}
const variants = [...new Set(data.ablation.map((a) => a.variant))];
write(
  `sim-ablation${suffix}.svg`,
  groupedBars({
    title: 'Ablation: SLO attainment of inlaid without each part (same trace per scenario)',
    subtitle: data.models === undefined ? `simulator; cpu-measured = MEASURED CPU cost model, h200-* = ESTIMATE (not measured) (${source})` : `simulator; ${data.scenarios.map((sc) => `${sc.id}: ${sc.placeholder ? 'estimate' : 'measured'}`).join(', ')} (${source})`,
    yLabel: 'SLO attainment',
    yMax: 1,
    groups: data.scenarios.map((sc) => ({
      name: `${sc.id}\n${sc.ablation.tasks} tasks, ${sc.ablation.rate} req/s`,
      bars: variants.map((v) => ({ name: v, value: data.ablation.find((a) => a.scenario === sc.id && a.variant === v).slo_attainment })),
    })),
  }),
);
console.log(written.join('\n'));
