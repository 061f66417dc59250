// Prints the real-vs-simulated table (markdown) from the files bench/sim/real_vs_sim.sh wrote to OUTDIR.
//   node bench/sim/real_vs_sim_table.mjs OUTDIR
import { existsSync, readFileSync } from 'node:fs';
const dir = process.argv[2];
const read = (f) => JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
const pct = (x) => `${(100 * x).toFixed(1)}%`;
const s = (x) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
const err = (sim, real) => (real > 0 ? `${sim >= real ? '+' : ''}${(100 * (sim - real) / real).toFixed(0)}%` : 'n/a');
const rows = [['metric', 'policy', 'real (gateway+worker)', 'simulated', 'sim error']];
for (const p of ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq'].filter((q) => existsSync(`${dir}/real-${q}.json`))) {
  const r = read(`real-${p}.json`).report;
  const m = read(`sim-${p}.json`);
  const pairs = [
    ['SLO attainment', r.slo_attainment, m.slo_attainment, pct],
    ['latency p50 (s)', r.latency_s.p50, m.p50_latency_s, s],
    ['latency p90 (s)', r.latency_s.p90, m.p90_latency_s, s],
    ['mean TTFT (s)', r.ttft_s.mean, m.mean_ttft_s, s],
    ['mean TPOT (s)', r.tpot_s.mean, m.mean_tpot_s, s],
    ['throughput (tok/s)', r.throughput_tok_s, m.throughput_tok_s, (x) => x.toFixed(1)],
    ['failed / aborted', r.failed, m.aborted + m.unfinished, String],
  ];
  for (const [name, real, sim, f] of pairs) rows.push([name, p, f(real), f(sim), typeof real === 'number' && name !== 'failed / aborted' ? err(sim, real) : '']);
}
console.log(rows.map((r, i) => `| ${r.join(' | ')} |` + (i === 0 ? `\n|${r.map(() => '---').join('|')}|` : '')).join('\n'));
