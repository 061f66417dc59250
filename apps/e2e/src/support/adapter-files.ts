/**
 * Adapter directories for tests, made from an existing PEFT adapter without Python: copies, and copies whose
 * matching float32 tensors are overwritten with one value (NaN, infinity, or a huge finite number) in the
 * safetensors file (header: u64 LE length + JSON).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILES = ['adapter_config.json', 'adapter_model.safetensors'];

export function copyAdapter(src: string, dst: string): void {
  mkdirSync(dst, { recursive: true });
  for (const f of FILES) copyFileSync(join(src, f), join(dst, f));
}

/** A copy of safetensors bytes with every F32 tensor whose name matches `pattern` set to `value`, and their names. */
export function fillTensors(safetensors: Buffer, pattern: RegExp, value: number): { bytes: Buffer; names: string[] } {
  const buf = Buffer.from(safetensors);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype?: string; data_offsets?: [number, number] }>;
  const names: string[] = [];
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || !pattern.test(name) || t.dtype !== 'F32' || t.data_offsets === undefined) continue;
    const [start, end] = t.data_offsets;
    for (let o = 8 + headerLen + start; o < 8 + headerLen + end; o += 4) buf.writeFloatLE(value, o);
    names.push(name);
  }
  return { bytes: buf, names };
}

/** Copies the adapter at `src` to `dst` with the matching F32 tensors set to `value`; returns their names. */
export function filledAdapter(src: string, dst: string, pattern: RegExp, value: number): string[] {
  copyAdapter(src, dst);
  const path = join(dst, 'adapter_model.safetensors');
  const { bytes, names } = fillTensors(readFileSync(path), pattern, value);
  writeFileSync(path, bytes);
  return names;
}
