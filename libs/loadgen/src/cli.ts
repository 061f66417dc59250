#!/usr/bin/env node
/**
 * `npm run loadgen -- --trace trace.jsonl --url http://127.0.0.1:8080 --out results.json
 * [--slo-ttft 5] [--slo-tpot 0.2] [--api-key K] [--time-scale 1] [--timeout-s 600] [--ignore-eos on|off]`
 * replays the trace against the gateway's OpenAI API, prints the summary and writes it with every
 * request's timings to --out.
 */
import { writeFileSync } from 'node:fs';
import { numberFlag, parseFlags, readTrace, rejectUnknown } from '@inlaid/workload';
import { summarize } from './metrics';
import { replay } from './replay';

const FLAGS = ['trace', 'url', 'out', 'slo-ttft', 'slo-tpot', 'api-key', 'time-scale', 'timeout-s', 'ignore-eos'];

async function main(argv: readonly string[]): Promise<void> {
  const flags = parseFlags(argv);
  rejectUnknown(flags, FLAGS);
  const tracePath = flags.get('trace');
  const out = flags.get('out');
  if (tracePath === undefined || out === undefined) throw new Error('--trace and --out are required');
  const ignoreEos = flags.get('ignore-eos') ?? 'on';
  if (!['on', 'off'].includes(ignoreEos)) throw new Error('--ignore-eos must be on or off');
  const trace = readTrace(tracePath);
  const slo = { ttftS: numberFlag(flags, 'slo-ttft', 5), tpotS: numberFlag(flags, 'slo-tpot', 0.2) };
  const timings = await replay(trace, {
    url: flags.get('url') ?? 'http://127.0.0.1:8080',
    apiKey: flags.get('api-key'),
    ignoreEos: ignoreEos === 'on',
    timeoutS: numberFlag(flags, 'timeout-s', 600),
    timeScale: numberFlag(flags, 'time-scale', 1),
  });
  const report = summarize(timings, slo);
  writeFileSync(out, JSON.stringify({ trace: tracePath, report, requests: timings }, null, 1));
  console.log(JSON.stringify(report));
}

main(process.argv.slice(2)).catch((e: Error) => {
  console.error(`loadgen: ${e.message}`);
  process.exit(2);
});
