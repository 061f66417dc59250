// Request-level comparison of a real_vs_sim_fit.sh run: the load client's timings of every request
// (B<rate>/real-POLICY.json) against the simulator's (B<rate>/sim-POLICY*.requests.jsonl), same trace order.
//   node bench/sim/real_vs_sim_requests.mjs DIR [OUT.json]
// Prints markdown: (1) the error table, sim vs real, of the simulator with the worker's context limit (fit A, and
// the gateway's own in-sample fit of the same run) and without it (fit A; the simulator before sched-real-v6);
// (2) mean TTFT by prompt length and by arrival time, with the simulated queueing delay (arrival to first
// admission). Only requests the real stack served count in TTFT means, as in the load client's summary.
// With DIR/first-text-B<rate>.jsonl (bench/sim/real_vs_sim_first_text.py), the simulated TTFT is also given at
// the token that first streams text, as the load client times it: ttft + (k - 1) * the request's simulated TPOT.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

const [dir, outFile] = process.argv.slice(2);
if (!dir) throw new Error('usage: real_vs_sim_requests.mjs DIR [OUT.json]');
const read = (f) => JSON.parse(readFileSync(f, 'utf8'));
const lines = (f) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const mean = (xs) => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);
const e = (x, r) => `${f2(x)} (${pct(rel(x, r))})`;
const e3 = (x, r) => `${f3(x)} (${pct(rel(x, r))})`;
const rel = (s, r) => (s === null || r === null || r === undefined || r === 0 ? null : (s - r) / r);
const pct = (v) => (v === null || !Number.isFinite(v) ? 'n/a' : `${v >= 0 ? '+' : '−'}${Math.abs(100 * v).toFixed(0)}%`);
const f2 = (v) => (v === null || v === undefined ? 'n/a' : v.toFixed(2));
const f3 = (v) => (v === null || v === undefined ? 'n/a' : v.toFixed(3));
const pts = (s, r) => `${(100 * (s - r)).toFixed(1)}`;

const PROMPT_BINS = [[0, 256], [256, 512], [512, 768], [768, 1024], [1024, Infinity]];
const binName = ([lo, hi]) => (hi === Infinity ? `≥ ${lo}` : `${lo}–${hi - 1}`);

function analyse(rate, policy, d) {
  const real = read(`${d}/real-${policy}.json`);
  const trace = lines(`${dir}/trace-B${rate}-sim.jsonl`);
  const after = lines(`${d}/sim-${policy}.requests.jsonl`);
  const opt = (f) => (existsSync(f) ? lines(f) : null);
  const before = opt(`${d}/sim-${policy}-no-context-limit.requests.jsonl`);
  const own = opt(`${d}/sim-${policy}-own.requests.jsonl`);
  const text = opt(`${dir}/first-text-B${rate}.jsonl`);
  const simSum = read(`${d}/sim-${policy}.json`);
  const simBefore = existsSync(`${d}/sim-${policy}-no-context-limit.json`) ? read(`${d}/sim-${policy}-no-context-limit.json`) : null;
  const simOwn = existsSync(`${d}/sim-${policy}-own.json`) ? read(`${d}/sim-${policy}-own.json`) : null;
  // simulated time of the k-th token (k = first token with text), from the request's simulated TTFT and TPOT
  const atText = (x, i) => (x.ttft_s === null || text === null || text[i].first_text_token === null ? x.ttft_s : x.ttft_s + (Math.min(text[i].first_text_token, x.output_tokens) - 1) * (x.tpot_s ?? 0));
  if (real.requests.length !== trace.length || after.length !== trace.length) throw new Error(`${d} ${policy}: request counts differ`);
  const rows = trace.map((t, i) => {
    const q = real.requests[i];
    return {
      prompt: t.prompt_tokens,
      arrival: t.arrival_s,
      realOk: q.ok,
      realTtft: q.ok && q.firstTokenS !== undefined ? q.firstTokenS - q.sentS : null,
      simTtft: after[i].ttft_s,
      simQueue: after[i].queue_s,
      simRejected: after[i].rejected,
      beforeTtft: before ? before[i].ttft_s : null,
      ownTtft: own ? own[i].ttft_s : null,
      simTextTtft: text ? atText(after[i], i) : null,
      simTpot: after[i].tpot_s,
      // the load client's TPOT: (last token - first text) / (n - 1), i.e. the sim's TPOT * (n - k) / (n - 1)
      simTextTpot: text && after[i].tpot_s !== null && text[i].first_text_token !== null && after[i].output_tokens > 1
        ? (after[i].tpot_s * (after[i].output_tokens - Math.min(text[i].first_text_token, after[i].output_tokens))) / (after[i].output_tokens - 1)
        : after[i].tpot_s,
      realTpot: q.ok && q.firstTokenS !== undefined && q.lastTokenS !== undefined ? (q.outputTokens > 1 ? (q.lastTokenS - q.firstTokenS) / (q.outputTokens - 1) : 0) : null,
      firstText: text ? text[i].first_text_token : null,
    };
  });
  const group = (pred) => {
    const g = rows.filter((r) => pred(r));
    const ok = g.filter((r) => r.realOk && r.simTtft !== null);
    return {
      n: g.length,
      real_failed: g.filter((r) => !r.realOk).length,
      sim_rejected: g.filter((r) => r.simRejected).length,
      real_ttft: mean(ok.map((r) => r.realTtft)),
      sim_ttft: mean(ok.map((r) => r.simTtft)),
      sim_queue: mean(ok.map((r) => r.simQueue)),
      before_ttft: before ? mean(g.filter((r) => r.beforeTtft !== null && r.realOk).map((r) => r.beforeTtft)) : null,
      own_ttft: own ? mean(ok.map((r) => r.ownTtft)) : null,
      sim_text_ttft: text ? mean(ok.map((r) => r.simTextTtft)) : null,
      mean_first_text_token: text ? mean(ok.map((r) => r.firstText)) : null,
      real_tpot: mean(ok.map((r) => r.realTpot)),
      sim_tpot: mean(ok.map((r) => r.simTpot)),
      sim_text_tpot: text ? mean(ok.map((r) => r.simTextTpot)) : null,
    };
  };
  const third = Math.max(...rows.map((r) => r.arrival)) / 3;
  return {
    summary: { real: real.report, sim: simSum, sim_before: simBefore, sim_own: simOwn },
    by_prompt: PROMPT_BINS.map((b) => ({ bin: binName(b), ...group((r) => r.prompt >= b[0] && r.prompt < b[1]) })),
    by_arrival: [0, 1, 2].map((k) => ({ bin: `${(k * third).toFixed(0)}–${((k + 1) * third).toFixed(0)} s`, ...group((r) => r.arrival >= k * third && (k === 2 || r.arrival < (k + 1) * third)) })),
    all: group(() => true),
  };
}

const result = {};
for (const sub of readdirSync(dir).filter((n) => /^B\d+$/.test(n)).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))) {
  const d = `${dir}/${sub}`;
  const rate = sub.slice(1);
  result[rate] = {};
  for (const f of readdirSync(d).filter((n) => /^real-[^+]*\.summary\.json$/.test(n)).sort()) {
    const p = f.slice(5, -'.summary.json'.length);
    if (existsSync(`${d}/sim-${p}.requests.jsonl`)) result[rate][p] = analyse(rate, p, d);
  }
}

const out = [];
out.push('| B rate, policy | simulator | tok/s sim (real) err | mean TTFT s sim (real) err | mean TPOT s sim (real) err | SLO sim (real) points | refused: sim / real |', '|---|---|---|---|---|---|---|');
for (const [rate, ps] of Object.entries(result)) {
  for (const [p, a] of Object.entries(ps)) {
    const r = a.summary.real;
    for (const [label, s] of [['before: fit A, no context limit', a.summary.sim_before], ['after: fit A, context limit', a.summary.sim], ['after, own fit (in sample)', a.summary.sim_own]]) {
      if (!s) continue;
      out.push(`| ${rate}, ${p} | ${label} | ${s.throughput_tok_s.toFixed(1)} (${r.throughput_tok_s.toFixed(1)}) ${pct(rel(s.throughput_tok_s, r.throughput_tok_s))} | ${f2(s.mean_ttft_s)} (${f2(r.ttft_s.mean)}) ${pct(rel(s.mean_ttft_s, r.ttft_s.mean))} | ${f3(s.mean_tpot_s)} (${f3(r.tpot_s.mean)}) ${pct(rel(s.mean_tpot_s, r.tpot_s.mean))} | ${(100 * s.slo_attainment).toFixed(1)}% (${(100 * r.slo_attainment).toFixed(1)}%) ${pts(s.slo_attainment, r.slo_attainment)} | ${s.rejected ?? 0} / ${r.failed} |`);
    }
  }
}
out.push('');
out.push('| B rate, policy | requests served by both | real TTFT s | sim TTFT s (err) | sim TTFT at first text s (err) | real TPOT s | sim TPOT s (err) | sim TPOT from first text s (err) | mean k |', '|---|---|---|---|---|---|---|---|---|');
for (const [rate, ps] of Object.entries(result)) for (const [p, a] of Object.entries(ps)) {
  const b = a.all;
  out.push(`| ${rate}, ${p} | ${b.n - b.real_failed} | ${f2(b.real_ttft)} | ${e(b.sim_ttft, b.real_ttft)} | ${e(b.sim_text_ttft, b.real_ttft)} | ${f3(b.real_tpot)} | ${e3(b.sim_tpot, b.real_tpot)} | ${e3(b.sim_text_tpot, b.real_tpot)} | ${f2(b.mean_first_text_token)} |`);
}
out.push('');
const HEAD = 'requests | refused real / sim | real mean TTFT s | sim after (fit A): TTFT s (err) | of which queueing s | at first text: s (err), mean k | after, own fit: s (err) | sim before: TTFT s (err) |';
const SEP = '|---|---|---|---|---|---|---|---|---|---|';
out.push(`| B rate, policy | prompt tokens (worker) | ${HEAD}`, SEP);

const binRow = (rate, p, b) => `| ${rate}, ${p} | ${b.bin} | ${b.n} | ${b.real_failed} / ${b.sim_rejected} | ${f2(b.real_ttft)} | ${e(b.sim_ttft, b.real_ttft)} | ${f2(b.sim_queue)} | ${e(b.sim_text_ttft, b.real_ttft)}, ${f2(b.mean_first_text_token)} | ${e(b.own_ttft, b.real_ttft)} | ${e(b.before_ttft, b.real_ttft)} |`;
for (const [rate, ps] of Object.entries(result)) for (const [p, a] of Object.entries(ps)) for (const b of a.by_prompt) out.push(binRow(rate, p, b));
out.push('');
out.push(`| B rate, policy | arrival | ${HEAD}`, SEP);
for (const [rate, ps] of Object.entries(result)) for (const [p, a] of Object.entries(ps)) for (const b of a.by_arrival) out.push(binRow(rate, p, b));
console.log(out.join('\n'));
if (outFile) writeFileSync(outFile, JSON.stringify(result, null, 1) + '\n');
