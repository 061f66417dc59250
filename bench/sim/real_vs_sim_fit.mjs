// Helpers of bench/sim/real_vs_sim_fit.sh.
//   node bench/sim/real_vs_sim_fit.mjs pool OUT.json FIT.json [FIT.json ...]
//     pools the served steps ("points") of gateway cost-model exports and fits them into one calibration file
//     (same NNLS, terms and held-out error as the gateway: @inlaid/scheduling cost-fit.ts); the pooled
//     steps go to OUT.points.json.
//   node bench/sim/real_vs_sim_fit.mjs collect OUT.json DIR
//     collects DIR/B<rate>/ (loadgen summaries, simulations, the gateways' own fits, loads) and the A fits into
//     one JSON with the simulator's errors ((sim - real) / real) per rate and policy.
//   node bench/sim/real_vs_sim_fit.mjs table SUMMARY.json
//     prints the markdown tables of bench/results/sched-real-v5-*.md from a summary.
import { createRequire } from 'node:module';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
const require = createRequire(import.meta.url);
const { fitSteps, heldOutError, costModelFileOf, predictStep } = require('../../libs/scheduling/dist/index.js');
const read = (f) => JSON.parse(readFileSync(f, 'utf8'));
const text = (f) => (existsSync(f) ? readFileSync(f, 'utf8').trim() : null);
const [cmd, out, ...rest] = process.argv.slice(2);

function pool(files) {
  const parts = files.map(read);
  const points = parts.flatMap((p) => p.points ?? []);
  if (points.length < 20) throw new Error(`only ${points.length} points in ${files.join(', ')}`);
  const n = points.length;
  const names = parts[0].measured?.terms_fitted;
  const avg = (f) => points.reduce((a, s) => a + f(s), 0) / n;
  const fit = {
    terms: fitSteps(points, names),
    error: heldOutError(points, Number.POSITIVE_INFINITY, names),
    fitted: names,
    fromS: points[0].atS,
    toS: points[n - 1].atS,
    mean: { wallS: avg((s) => s.wallS), prefillTokens: avg((s) => s.prefillTokens), decodeRows: avg((s) => s.decodeRows), adapters: avg((s) => s.adapters), kvTokens: avg((s) => s.kvTokens) },
  };
  const p0 = parts[0];
  const cap = { kv_blocks: p0.kv_blocks, block_size: p0.block_size, max_batch_rows: p0.max_batch_rows, max_prefill_tokens: p0.max_prefill_tokens };
  const span = parts.reduce((a, p) => a + (p.measured?.span_s ?? 0), 0);
  const context = `pooled served steps of ${files.map((f) => basename(f)).join(' + ')} (${parts.map((p) => p.measured?.context).join('; ')})`;
  const file = costModelFileOf(fit, cap, p0.suggested_slo, { label: 'served-fit-A', dateUtc: new Date().toISOString(), worker: p0.measured?.worker ?? '?', context, spanS: span });
  writeFileSync(out, JSON.stringify(file, null, 1) + '\n');
  writeFileSync(out.replace(/\.json$/, '.points.json'), JSON.stringify(points) + '\n');
  console.log(`${out}: ${n} steps; base ${(1e3 * file.base_s).toFixed(2)} ms, prefill ${(1e3 * file.prefill_token_s).toFixed(4)} ms/token, decode ${(1e3 * file.decode_row_s).toFixed(3)} ms/row, adapter ${(1e3 * file.adapter_s).toFixed(2)} ms, KV ${(1e6 * file.kv_token_s).toFixed(2)} us/token, prefill step ${(1e3 * file.prefill_step_s).toFixed(2)} ms; held-out median ${(100 * file.fit_error.median_rel).toFixed(1)}%, p90 ${(100 * file.fit_error.p90_rel).toFixed(1)}%, sum ratio ${file.fit_error.sum_ratio.toFixed(3)}`);
}

// simulator key -> the loadgen summary's value
const METRICS = [['throughput_tok_s', (r) => r.throughput_tok_s], ['mean_ttft_s', (r) => r.ttft_s?.mean], ['mean_tpot_s', (r) => r.tpot_s?.mean], ['slo_attainment', (r) => r.slo_attainment]];
const strip = (f) => { if (f === null || typeof f !== 'object') return f; const { points, ...rest } = f; return { ...rest, n_points: points?.length }; };

/** Steps the gateway measured (window), their total wall time, and how well fit A predicts them. */
function stepSums(f, fitA) {
  if (!existsSync(f) || readFileSync(f, 'utf8').trim() === '') return null;
  const pts = read(f).points ?? [];
  const wall = pts.reduce((a, s) => a + s.wallS, 0);
  const out = { steps: pts.length, wall_s: wall };
  if (fitA === undefined || pts.length === 0) return out;
  const rel = pts.map((s) => Math.abs(predictStep(fitA, s) - s.wallS) / s.wallS).sort((a, b) => a - b);
  return { ...out, fit_A_predicted_over_served: pts.reduce((a, s) => a + predictStep(fitA, s), 0) / wall, fit_A_median_rel: rel[Math.floor(rel.length / 2)] };
}

function collect(dir) {
  const fitA = read(`${dir}/fit-A.json`);
  const result = { fit_A: strip(fitA), fits_A: {}, rates: {} };
  for (const f of readdirSync(dir).filter((n) => /^fit-A-.*\.json$/.test(n))) {
    result.fits_A[f.slice(6, -5)] = { fit: strip(existsSync(`${dir}/${f}`) && readFileSync(`${dir}/${f}`, 'utf8').trim() ? read(`${dir}/${f}`) : null), real: read(`${dir}/real-A-${f.slice(6, -5)}.summary.json`), load_before: text(`${dir}/load-before-A-${f.slice(6, -5)}.txt`), load_after: text(`${dir}/load-after-A-${f.slice(6, -5)}.txt`), cpu: text(`${dir}/cpu-A-${f.slice(6, -5)}.txt`), worker: text(`${dir}/worker-A-${f.slice(6, -5)}.txt`), gateway_steps: stepSums(`${dir}/${f}`, fitA) };
  }
  for (const sub of readdirSync(dir).filter((n) => /^B\d+$/.test(n))) {
    const d = `${dir}/${sub}`;
    const policies = {};
    for (const f of readdirSync(d).filter((n) => /^real-.*\.summary\.json$/.test(n))) {
      const p = f.slice(5, -'.summary.json'.length);
      const sp = p.split('+')[0]; // inlaid+static-X is simulated as inlaid
      const real = read(`${d}/${f}`);
      const sims = {};
      for (const g of readdirSync(d).filter((n) => n === `sim-${sp}.json` || (n.startsWith(`sim-${sp}-`) && n.endsWith('.json')))) {
        const label = g === `sim-${sp}.json` ? 'fit-A' : g.slice(`sim-${sp}-`.length, -5);
        if ((label === 'own' || label === 'fit-A-same-policy') && sp !== p) continue;
        const sim = read(`${d}/${g}`);
        const err = {};
        for (const [s, r] of METRICS) err[s] = r(real) ? (sim[s] - r(real)) / r(real) : null;
        sims[label] = { sim, err };
      }
      const fitB = existsSync(`${d}/fit-${p}.json`) && readFileSync(`${d}/fit-${p}.json`, 'utf8').trim() ? strip(read(`${d}/fit-${p}.json`)) : null;
      policies[p] = { real, sim: sims, gateway_fit: fitB, load_before: text(`${d}/load-before-${p}.txt`), load_after: text(`${d}/load-after-${p}.txt`), cpu: text(`${d}/cpu-${p}.txt`), worker: text(`${d}/worker-${p}.txt`), gateway_steps: stepSums(`${d}/fit-${p}.json`, fitA) };
    }
    result.rates[sub.slice(1)] = policies;
  }
  writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
}

const pct = (v) => (v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : `${v >= 0 ? '+' : '−'}${Math.abs(100 * v).toFixed(0)}%`);
const f3 = (v) => (v === undefined || v === null ? 'n/a' : v.toFixed(3));
const f2 = (v) => (v === undefined || v === null ? 'n/a' : v.toFixed(2));
const slo = (v) => `${(100 * v).toFixed(1)}%`;
const terms = (m) => `${(1e3 * m.base_s).toFixed(2)} / ${(1e3 * m.prefill_token_s).toFixed(4)} / ${(1e3 * m.decode_row_s).toFixed(3)} / ${(1e3 * m.adapter_s).toFixed(2)} / ${(1e6 * m.kv_token_s).toFixed(2)} / ${(1e3 * (m.prefill_step_s ?? 0)).toFixed(2)}`;
const fitRow = (name, m) => (m ? `| ${name} | ${terms(m)} | ${m.fit_error.n_steps} | ${pct(m.fit_error.median_rel).slice(1)} / ${pct(m.fit_error.p90_rel).slice(1)} | ${m.fit_error.sum_ratio.toFixed(3)} | ${(1e3 * m.window_mean.wallS).toFixed(1)} ms, ${m.window_mean.decodeRows.toFixed(1)} rows, ${m.window_mean.kvTokens.toFixed(0)} KV |` : `| ${name} | no fit | | | | |`);

function table(file) {
  const s = read(file);
  const out = [];
  out.push('| fit (served steps of) | base ms / prefill ms/tok / decode ms/row / adapter ms / KV µs/tok / prefill-step ms | steps | held-out median / p90 rel. error | predicted/served time | window mean step |', '|---|---|---|---|---|---|');
  out.push(fitRow('**A (pooled, used by the simulator)**', s.fit_A));
  for (const [p, v] of Object.entries(s.fits_A)) out.push(fitRow(`A, ${p} run`, v.fit));
  for (const [r, ps] of Object.entries(s.rates)) for (const [p, v] of Object.entries(ps)) out.push(fitRow(`B ${r} req/s, ${p} (gateway's own, end of run)`, v.gateway_fit));
  out.push('');
  const ld = (x) => (x ?? '').split(' ').slice(0, 3).join(' ') + ' ' + ((x ?? '').match(/\(.*\)/)?.[0] ?? '');
  out.push('| trace, policy | load before → after | CPU during the run | SLO | tok/s | mean TTFT (s) | mean TPOT (s) | failed |', '|---|---|---|---|---|---|---|---|');
  for (const [p, v] of Object.entries(s.fits_A)) out.push(`| A ${p} | ${ld(v.load_before)} → ${ld(v.load_after)} | ${v.cpu ?? ''} | ${slo(v.real.slo_attainment)} | ${v.real.throughput_tok_s.toFixed(1)} | ${f2(v.real.ttft_s.mean)} | ${f3(v.real.tpot_s.mean)} | ${v.real.failed} |`);
  for (const [r, ps] of Object.entries(s.rates)) for (const [p, v] of Object.entries(ps)) out.push(`| B ${r} req/s, ${p} | ${ld(v.load_before)} → ${ld(v.load_after)} | ${v.cpu ?? ''} | ${slo(v.real.slo_attainment)} | ${v.real.throughput_tok_s.toFixed(1)} | ${f2(v.real.ttft_s.mean)} | ${f3(v.real.tpot_s.mean)} | ${v.real.failed} |`);
  out.push('');
  out.push('| trace, policy | the worker: engine steps, engine step time, preemptions | the gateway: steps measured, their wall time | engine share of served time | fit A on these steps: predicted / served time, median rel. error |', '|---|---|---|---|---|');
  const share = (v) => { const m = /engine step time ([\d.]+) s/.exec(v.worker ?? ''); return m && v.gateway_steps ? `${(100 * Number(m[1]) / v.gateway_steps.wall_s).toFixed(0)}%` : 'n/a'; };
  const gs = (v) => (v.gateway_steps ? `${v.gateway_steps.steps} steps, ${v.gateway_steps.wall_s.toFixed(1)} s` : 'n/a');
  const fa = (v) => (v.gateway_steps?.fit_A_predicted_over_served ? `${v.gateway_steps.fit_A_predicted_over_served.toFixed(2)}, ${(100 * v.gateway_steps.fit_A_median_rel).toFixed(0)}%` : 'n/a');
  for (const [p, v] of Object.entries(s.fits_A)) out.push(`| A ${p} | ${v.worker ?? 'n/a'} | ${gs(v)} | ${share(v)} | ${fa(v)} (in sample) |`);
  for (const [r, ps] of Object.entries(s.rates)) for (const [p, v] of Object.entries(ps)) out.push(`| B ${r} req/s, ${p} | ${v.worker ?? 'n/a'} | ${gs(v)} | ${share(v)} | ${fa(v)} |`);
  out.push('');
  out.push('| B rate, policy | cost model | sim SLO (real) | sim tok/s (err) | sim TTFT s (err) | sim TPOT s (err) | SLO err (points) |', '|---|---|---|---|---|---|---|');
  for (const [r, ps] of Object.entries(s.rates)) {
    for (const [p, v] of Object.entries(ps)) {
      for (const [label, x] of Object.entries(v.sim)) {
        const e = x.err;
        out.push(`| ${r}, ${p} | ${label} | ${slo(x.sim.slo_attainment)} (${slo(v.real.slo_attainment)}) | ${x.sim.throughput_tok_s.toFixed(1)} (${pct(e.throughput_tok_s)}) | ${f2(x.sim.mean_ttft_s)} (${pct(e.mean_ttft_s)}) | ${f3(x.sim.mean_tpot_s)} (${pct(e.mean_tpot_s)}) | ${(100 * (x.sim.slo_attainment - v.real.slo_attainment)).toFixed(1)} |`);
      }
    }
  }
  out.push('');
  out.push('| B rate | run | inlaid SLO | fifo SLO | fcfs-maxloras SLO | ratio vs better baseline | inlaid tok/s / better baseline tok/s | goal (≥ 2x, ≥ 99%) |', '|---|---|---|---|---|---|---|---|');
  for (const [r, ps] of Object.entries(s.rates)) {
    const f = ps.fifo?.real;
    const c = ps['fcfs-maxloras']?.real;
    if (!f || !c) continue;
    const bestSlo = Math.max(f.slo_attainment, c.slo_attainment);
    const bestTok = Math.max(f.throughput_tok_s, c.throughput_tok_s);
    const verdict = (i, who) => {
      const ratio = i.slo_attainment / bestSlo;
      const tok = i.throughput_tok_s / bestTok;
      out.push(`| ${r} | ${who} | ${slo(i.slo_attainment)} | ${slo(f.slo_attainment)} | ${slo(c.slo_attainment)} | ${Number.isFinite(ratio) ? ratio.toFixed(1) + 'x' : '∞'} | ${(100 * tok).toFixed(0)}% | ${ratio >= 2 && tok >= 0.99 ? '**met**' : '**not met**'} |`);
    };
    for (const [p, v] of Object.entries(ps)) if (p.startsWith('inlaid')) verdict(v.real, `real, ${p}`);
    const sf = ps.fifo.sim['fit-A']?.sim;
    const sc = ps['fcfs-maxloras'].sim['fit-A']?.sim;
    const si = ps.inlaid?.sim['fit-A']?.sim;
    if (sf && sc && si) {
      const ratio = si.slo_attainment / Math.max(sf.slo_attainment, sc.slo_attainment);
      const tok = si.throughput_tok_s / Math.max(sf.throughput_tok_s, sc.throughput_tok_s);
      out.push(`| ${r} | simulated, fit A | ${slo(si.slo_attainment)} | ${slo(sf.slo_attainment)} | ${slo(sc.slo_attainment)} | ${Number.isFinite(ratio) ? ratio.toFixed(1) + 'x' : '∞'} | ${(100 * tok).toFixed(0)}% | ${ratio >= 2 && tok >= 0.99 ? 'met' : 'not met'} |`);
    }
  }
  console.log(out.join('\n'));
}

if (cmd === 'pool') pool(rest);
else if (cmd === 'collect') collect(rest[0]);
else if (cmd === 'table') table(out);
else throw new Error('usage: real_vs_sim_fit.mjs pool OUT.json FIT... | collect OUT.json DIR | table SUMMARY.json');
