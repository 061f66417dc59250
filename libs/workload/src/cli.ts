#!/usr/bin/env node
/**
 * `npm run workload -- --tasks 100 --rate 20 --cv 2 --alpha 1 --duration 600 --seed 1 --out trace.jsonl
 * [--task-lengths lengths.json]` writes a JSONL trace and prints a one-line summary.
 */
import { numberFlag, parseFlags, rejectUnknown } from './args';
import { generateTrace } from './generator';
import { syntheticProfiles } from './profiles';
import { loadTaskLengths, writeTrace } from './trace-io';

function main(argv: readonly string[]): void {
  const flags = parseFlags(argv);
  rejectUnknown(flags, ['tasks', 'rate', 'cv', 'alpha', 'duration', 'seed', 'out', 'task-lengths']);
  const seed = numberFlag(flags, 'seed', 1);
  const lengths = flags.get('task-lengths');
  const profiles = lengths !== undefined ? loadTaskLengths(lengths) : syntheticProfiles(numberFlag(flags, 'tasks', 10), seed);
  const trace = generateTrace(profiles, {
    rate: numberFlag(flags, 'rate', 10),
    cv: numberFlag(flags, 'cv', 1),
    alpha: numberFlag(flags, 'alpha', 1),
    durationS: numberFlag(flags, 'duration', 600),
    seed,
  });
  const out = flags.get('out');
  if (out === undefined) throw new Error('--out is required');
  writeTrace(out, trace);
  const tasks = new Set(trace.map((r) => r.task)).size;
  console.log(JSON.stringify({ out, requests: trace.length, tasks_seen: tasks, tasks: profiles.length }));
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error(`workload: ${(e as Error).message}`);
  process.exit(2);
}
