#!/usr/bin/env node
/**
 * A trace for timing the real engine's served steps (bench/engine/served_steps.py): the evidence sweep's task length
 * profiles (syntheticProfiles(tasks, 1, DEFAULT_PROFILE_OPTIONS)) and bursty arrivals (Gamma, cv 2, power-law task
 * popularity), in segments of rising rate so that one short run sees light load, saturation and overload (batches
 * of 1 to the worker's row limit, 1 to 32 distinct adapters, mixed prefill + decode steps).
 * Usage: node bench/sim/served-trace.js --tasks 100 --segments 3:10,10:15,25:20,45:20,70:20 --out trace.jsonl
 *        [--seed 1] [--max-len 4096]   (segments: rate req/s : seconds; --max-len caps prompt + output tokens
 *        as the worker's context limit does: the output is cut, the prompt kept)
 */
'use strict';
const { generateTrace, syntheticProfiles, parseFlags, numberFlag, DEFAULT_PROFILE_OPTIONS, writeTrace } = require('../../libs/workload/dist');

/** "3:10,10:15" -> [{ rate: 3, seconds: 10 }, { rate: 10, seconds: 15 }] */
function parseSegments(text) {
  return text.split(',').map((part) => {
    const [rate, seconds] = part.split(':').map(Number);
    if (!(rate > 0) || !(seconds > 0)) throw new Error(`bad segment "${part}": expected RATE:SECONDS, both > 0`);
    return { rate, seconds };
  });
}

/** The segments' traces back to back (each segment its own seed, seed + index), lengths capped at maxLen. */
function servedTrace(tasks, segments, seed, maxLen) {
  const profiles = syntheticProfiles(tasks, 1, DEFAULT_PROFILE_OPTIONS);
  const out = [];
  let offset = 0;
  segments.forEach(({ rate, seconds }, i) => {
    for (const r of generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: seconds, seed: seed + i })) {
      const prompt = Math.min(r.prompt_tokens, maxLen - 1);
      out.push({ ...r, arrival_s: r.arrival_s + offset, prompt_tokens: prompt, output_tokens: Math.max(1, Math.min(r.output_tokens, maxLen - prompt)) });
    }
    offset += seconds;
  });
  return out;
}

if (require.main === module) {
  const flags = parseFlags(process.argv.slice(2));
  const out = flags.get('out');
  if (out === undefined) throw new Error('--out is required');
  const segments = parseSegments(flags.get('segments') ?? '3:10,10:15,25:20,45:20,70:20');
  const trace = servedTrace(numberFlag(flags, 'tasks', 100), segments, numberFlag(flags, 'seed', 1), numberFlag(flags, 'max-len', 4096));
  writeTrace(out, trace);
  const mean = (f) => trace.reduce((a, r) => a + f(r), 0) / trace.length;
  console.log(JSON.stringify({ out, requests: trace.length, tasks_seen: new Set(trace.map((r) => r.task)).size, mean_prompt: mean((r) => r.prompt_tokens), mean_output: mean((r) => r.output_tokens), segments }));
}

module.exports = { parseSegments, servedTrace };
