// Collects real_vs_sim.sh output directories into one JSON: per rate, per policy, the loadgen summary, the
// simulator's prediction for each cost model (sim-POLICY.json = SIM_COST_MODEL, sim-POLICY-LABEL.json = others)
// and the load average recorded before/after (load-before.txt / load-after.txt when present).
//   node bench/sim/real_vs_sim_json.mjs OUT.json RATE=DIR [RATE=DIR ...]
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
const [out, ...pairs] = process.argv.slice(2);
const read = (f) => JSON.parse(readFileSync(f, 'utf8'));
const text = (f) => (existsSync(f) ? readFileSync(f, 'utf8').trim() : null);
const result = {};
for (const pair of pairs) {
  const [rate, dir] = pair.split('=');
  const policies = {};
  for (const f of readdirSync(dir).filter((n) => /^real-.*\.summary\.json$/.test(n))) {
    const p = f.slice(5, -'.summary.json'.length);
    const sims = {};
    for (const g of readdirSync(dir).filter((n) => n === `sim-${p}.json` || (n.startsWith(`sim-${p}-`) && n.endsWith('.json')))) {
      sims[g === `sim-${p}.json` ? 'default' : g.slice(`sim-${p}-`.length, -5)] = read(`${dir}/${g}`);
    }
    policies[p] = { real: read(`${dir}/${f}`), sim: sims };
  }
  result[rate] = { load_before: text(`${dir}/load-before.txt`), load_after: text(`${dir}/load-after.txt`), policies };
}
writeFileSync(out, JSON.stringify(result, null, 1) + '\n');
