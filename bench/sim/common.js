/**
 * Shared by the simulator bench scripts: the repository root, cost-model loading, the four policies, the
 * provenance every result file starts with (command, date, simulation host), the load-relative scenarios of the
 * seed studies, and the inlaid-variant syntax of their command lines.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { DEFAULT_PROFILE_OPTIONS } = require('../../libs/workload/dist');
const { parseCostModel } = require('../../libs/sim/dist');
const { SCARCE_KV_BLOCKS, CPU_PROFILES } = require('./evidence-scenarios');

const root = path.join(__dirname, '..', '..');
/** A calibration file by name (libs/sim/calibration/NAME) or by path. */
const loadModel = (f) => parseCostModel(JSON.parse(fs.readFileSync(path.resolve(root, 'libs/sim/calibration', f), 'utf8')), f);
const POLICIES = [
  ['inlaid', { policy: 'inlaid' }],
  ['fifo', { policy: 'fifo' }],
  ['fcfs-maxloras', { policy: 'fcfs-maxloras', maxLoras: 4 }],
  ['mlfq', { policy: 'mlfq' }],
];

/** The simulation host (not the hardware a cost model describes). */
const hostMachine = () => `${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}, node ${process.version}`;

/** Provenance of one run of bench/sim/SCRIPT: the command that repeats it, the ISO date and the host. */
function provenance(script, argv = process.argv.slice(2)) {
  return { command: `node bench/sim/${script} ${argv.join(' ')}`.trim(), date: new Date().toISOString(), machine: hostMachine() };
}

/** Writes bench/results/NAME (text, or JSON for objects) and returns its path. */
function writeResult(name, content) {
  const dir = path.join(root, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 1));
  return file;
}

/**
 * Scenarios of the seed studies (variant-sweep.js, loss-analysis.js), addressed by load = a multiple of the saturated
 * rate that the evidence sweep measured for fifo with 100 tasks (sim-evidence-2026-11-29-h200.md; 5 req/s rounded
 * for the CPU model).
 */
const LOAD_SCENARIOS = {
  full: { model: 'h200-measured.json', kvBlocks: undefined, satRate: 28.23, profiles: DEFAULT_PROFILE_OPTIONS, slo: undefined },
  scarce: { model: 'h200-measured.json', kvBlocks: SCARCE_KV_BLOCKS, satRate: 20.77, profiles: DEFAULT_PROFILE_OPTIONS, slo: undefined },
  cpu: { model: 'cpu-tiny-measured.json', kvBlocks: undefined, satRate: 5, profiles: CPU_PROFILES, slo: { ttftS: 1.5, tpotS: 0.1 } },
};

/** `JSON of inlaid options` (an optional "top" object sets top-level scheduler options) as a scheduler config over `base`. */
function inlaidVariant(json, base = { policy: 'inlaid' }) {
  const { top, ...inlaid } = JSON.parse(json);
  return { ...base, ...(top ?? {}), inlaid };
}

module.exports = { root, loadModel, POLICIES, hostMachine, provenance, writeResult, LOAD_SCENARIOS, inlaidVariant };
