/** File I/O shell: read/write JSONL traces and load real per-task length lists from JSON. */
import { readFileSync, writeFileSync } from 'node:fs';
import { profilesFromPairs } from './profiles';
import { TaskProfile } from './distributions';
import { formatTraceLine, parseTrace, TraceRecord } from './trace';

export function readTrace(path: string): TraceRecord[] {
  return parseTrace(readFileSync(path, 'utf8'));
}

export function writeTrace(path: string, records: readonly TraceRecord[]): void {
  writeFileSync(path, records.map(formatTraceLine).join('\n') + (records.length > 0 ? '\n' : ''));
}

/** `{ "xsum": [[412, 37], ...], ... }` -> one profile per task, sampling real pairs. */
export function loadTaskLengths(path: string): TaskProfile[] {
  const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: expected an object of task -> [[prompt, output], ...]`);
  return profilesFromPairs(v as Record<string, [number, number][]>);
}
