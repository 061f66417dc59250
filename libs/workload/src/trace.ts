/** The trace record and its JSONL line format (pure; file I/O lives in trace-io.ts). */

export interface TraceRecord {
  readonly arrival_s: number;
  readonly task: string;
  readonly prompt_tokens: number;
  readonly output_tokens: number;
  readonly prompt?: string;
}

export function formatTraceLine(r: TraceRecord): string {
  return JSON.stringify({ ...r, arrival_s: Math.round(r.arrival_s * 1e6) / 1e6 });
}

export function parseTraceLine(line: string, lineNo: number): TraceRecord {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`trace line ${lineNo}: not JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof v !== 'object' || v === null) throw new Error(`trace line ${lineNo}: expected an object`);
  const o = v as Record<string, unknown>;
  const num = (k: string, min: number): number => {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x < min) throw new Error(`trace line ${lineNo}: "${k}" must be a number >= ${min}`);
    return x;
  };
  if (typeof o.task !== 'string' || o.task === '') throw new Error(`trace line ${lineNo}: "task" must be a non-empty string`);
  if (o.prompt !== undefined && typeof o.prompt !== 'string') throw new Error(`trace line ${lineNo}: "prompt" must be a string`);
  return {
    arrival_s: num('arrival_s', 0),
    task: o.task,
    prompt_tokens: Math.round(num('prompt_tokens', 1)),
    output_tokens: Math.round(num('output_tokens', 1)),
    ...(o.prompt !== undefined ? { prompt: o.prompt as string } : {}),
  };
}

export function parseTrace(text: string): TraceRecord[] {
  const out: TraceRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() !== '') out.push(parseTraceLine(line, i + 1));
  });
  for (let i = 1; i < out.length; i++) {
    if (out[i].arrival_s < out[i - 1].arrival_s) throw new Error(`trace line ${i + 1}: arrivals must be non-decreasing`);
  }
  return out;
}
