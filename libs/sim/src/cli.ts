#!/usr/bin/env node
/**
 * `npm run sim -- --trace trace.jsonl --policy inlaid [--workers 1] [--kv-blocks N] [--cost-model f.json]
 * [--beta 10] [--work-conserving on|off] [--fill-max-tasks N] [--max-loras 4] [--predictor quantile|mean|none] [--grouping on|off] [--srtf on|off]
 * [--memory-aware on|off] [--step-cost-hint on|off] [--slo-ttft S --slo-tpot S] [--abort-hopeless on] [--json]
 * [--max-model-len N] [--requests-out FILE]`
 * --max-model-len: the worker's context limit (its ready line's max_model_len): prompts of N tokens or more are
 * refused (counted in `rejected`, SLO misses), outputs stop at N. --requests-out: one JSON line per request.
 * (inlaid knobs: SIM_FLAGS in options.ts, e.g. --budget-safety 0.95 --lost-slack on --batch-fixed-share 0.2)
 * Without --cost-model: calibration/cpu-tiny-served-s7.json (the served CPU fit; default-cost-model.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { numberFlag, parseFlags, readTrace, rejectUnknown } from '@inlaid/workload';
import { parseCostModel } from './cost-model';
import { DEFAULT_COST_MODEL } from './default-cost-model';
import { boolFlag, schedulerConfigFromFlags, SIM_FLAGS } from './options';
import { requestLines } from './request-dump';
import { simulate } from './simulator';

export { DEFAULT_COST_MODEL } from './default-cost-model';

function main(argv: readonly string[]): void {
  const flags = parseFlags(argv, ['json']);
  rejectUnknown(flags, SIM_FLAGS);
  const tracePath = flags.get('trace');
  if (tracePath === undefined) throw new Error('--trace is required');
  const costPath = flags.get('cost-model') ?? DEFAULT_COST_MODEL;
  const costModel = parseCostModel(JSON.parse(readFileSync(costPath, 'utf8')), costPath);
  const trace = readTrace(tracePath);
  const t0 = process.hrtime.bigint();
  const { report, stats, results } = simulate(trace, {
    scheduler: schedulerConfigFromFlags(flags),
    costModel,
    workers: numberFlag(flags, 'workers', 1),
    ...(flags.has('kv-blocks') ? { kvBlocks: numberFlag(flags, 'kv-blocks') } : {}),
    drainS: numberFlag(flags, 'drain-s', 600),
    stepCostHint: boolFlag(flags, 'step-cost-hint', true),
    ...(flags.has('max-model-len') ? { maxModelLen: numberFlag(flags, 'max-model-len') } : {}),
  });
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const requestsOut = flags.get('requests-out');
  if (requestsOut !== undefined) writeFileSync(requestsOut, requestLines(results));
  const maxModelLen = flags.has('max-model-len') ? numberFlag(flags, 'max-model-len') : null;
  const out = { ...report, steps: stats.steps, preemptions: stats.preemptions, mean_batch_rows: stats.meanBatchRows, mean_adapters_per_step: stats.meanAdaptersPerStep, sim_end_s: stats.endS, sim_wall_s: wallS, cost_model: costModel.label, cost_model_placeholder: costModel.placeholder, max_model_len: maxModelLen };
  if (boolFlag(flags, 'json', false)) console.log(JSON.stringify(out));
  else for (const [k, v] of Object.entries(out)) console.log(`${k.padEnd(24)} ${typeof v === 'number' ? Number(v.toFixed(4)) : v}`);
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error(`sim: ${(e as Error).message}`);
  process.exit(2);
}
