/**
 * Scenario sets of the evidence sweep (bench/sim/evidence.js --set NAME). A scenario = a cost model, a KV
 * capacity, task length profiles, an SLO, request rates and the ablation point. `rates: 'auto'` derives the
 * rates from the model's saturated throughput (fifo at overload, 100 tasks), so a newly measured model needs
 * no hand-picked rates; the derivation is recorded in the results.
 */
'use strict';
const { DEFAULT_PROFILE_OPTIONS } = require('../../libs/workload/dist');

/** Lengths for the tiny CPU model: its 1024 positions and the calibration's range (prompts 16-192, 1-32 rows). */
const CPU_PROFILES = { ...DEFAULT_PROFILE_OPTIONS, promptMedian: [16, 256], outputMedian: [8, 128], maxPrompt: 512, maxOutput: 256 };
/** Multiples of the saturated request rate swept when rates are 'auto' (1.0 to 2.0 are "high load": evidence-report.js). */
const AUTO_LOADS = [0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 1.75, 2.0];
/** KV blocks (16 tokens) a 24 GB GPU (the paper's RTX 4090/3090) has left for Llama-2-7B 4-bit: bench/sim/kv_budget.py. */
const SCARCE_KV_BLOCKS = 1855;

const cpuMeasured = {
  id: 'cpu-measured',
  name: "CPU cost model, MEASURED (cpu-tiny-measured.json), the real worker's 512 KV blocks",
  model: 'cpu-tiny-measured.json',
  kvBlocks: undefined,
  profiles: CPU_PROFILES,
  slo: { ttftS: 1.5, tpotS: 0.1 },
  rates: [1, 2, 3, 3.5, 4, 5, 6],
  ablation: { tasks: 100, rate: 4 },
};

const SETS = {
  /** The first sweep (sim-evidence-2026-11-29): measured CPU, estimated H200 with tight and full KV. */
  default: [
    cpuMeasured,
    {
      id: 'h200-estimate-tight-kv',
      name: 'H200 engine ESTIMATE (h200-engine-estimate.json, NOT measured), tight KV 2000 blocks = 32k tokens',
      model: 'h200-engine-estimate.json',
      kvBlocks: 2000,
      profiles: DEFAULT_PROFILE_OPTIONS,
      slo: undefined,
      rates: [5, 10, 15, 20, 25, 30, 40],
      ablation: { tasks: 100, rate: 20 },
    },
    {
      id: 'h200-estimate-full-kv',
      name: 'H200 engine ESTIMATE (NOT measured), full H200 KV 13400 blocks (control: memory does not bind)',
      model: 'h200-engine-estimate.json',
      kvBlocks: undefined,
      profiles: DEFAULT_PROFILE_OPTIONS,
      slo: undefined,
      rates: [10, 15, 20, 25, 30, 40],
      ablation: { tasks: 100, rate: 20 },
    },
  ],
  /** The H200 sweep: a cost model fitted from engine steps measured on the H200 (calibrate_h200.py). */
  h200: (model = 'h200-measured.json') => [
    {
      id: 'h200-measured-full-kv',
      name: `H200 cost model fitted from MEASURED engine steps (${model}); KV of a real H200 serving Llama-2-7B 4-bit (kv_budget.py)`,
      model,
      kvBlocks: undefined,
      profiles: DEFAULT_PROFILE_OPTIONS,
      slo: undefined,
      rates: 'auto',
      ablation: { tasks: 100, load: 1.25 },
    },
    {
      id: 'h200-measured-scarce-kv',
      name: `Same measured H200 step costs, scarce KV: ${SCARCE_KV_BLOCKS} blocks = what a 24 GB GPU holds (the paper's RTX 4090)`,
      model,
      kvBlocks: SCARCE_KV_BLOCKS,
      profiles: DEFAULT_PROFILE_OPTIONS,
      slo: undefined,
      rates: 'auto',
      ablation: { tasks: 100, load: 1.25 },
    },
    { ...cpuMeasured, rates: 'auto', ablation: { tasks: 100, load: 1.25 } },
  ],
  /** The CPU scenario of the h200 set alone, with a chosen CPU calibration (e.g. a refit): --set cpu --model FILE. */
  cpu: (model = cpuMeasured.model) => [
    { ...cpuMeasured, model, name: `CPU cost model, MEASURED (${model}), the real worker's 512 KV blocks`, rates: 'auto', ablation: { tasks: 100, load: 1.25 } },
  ],
};

function scenarioSet(name, model) {
  const s = SETS[name];
  if (s === undefined) throw new Error(`unknown scenario set "${name}"; expected one of ${Object.keys(SETS).join(', ')}`);
  return typeof s === 'function' ? s(model) : s;
}

/** Round a rate to 2 significant digits (rates read better in tables). */
const round2 = (v) => Number(v.toPrecision(2));

module.exports = { scenarioSet, AUTO_LOADS, SCARCE_KV_BLOCKS, CPU_PROFILES, round2 };
