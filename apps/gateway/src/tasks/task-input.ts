/**
 * POST /v1/tasks input, validated (pure): a task name, where its adapter is (a path under an allowed root,
 * or uploaded files), its calibration data (inline JSONL or an uploaded file id), SLO targets. Every error
 * is a 400 naming the field.
 */
import { SLO_MS_MAX, SLO_MS_MIN } from '@inlaid/config';
import { InlaidError } from '../common/inlaid-error';
import { checkCalibration } from './calibration';

export const TASK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface Slo {
  readonly ttft_ms?: number;
  readonly tpot_ms?: number;
}

export type CalibrationSource = { readonly kind: 'inline'; readonly jsonl: string } | { readonly kind: 'file'; readonly fileId: string };

export interface CreateTaskInput {
  readonly name: string;
  /** null when the adapter comes as uploaded files. */
  readonly adapterPath: string | null;
  readonly calibration: CalibrationSource | null;
  readonly slo: Slo | null;
  readonly waitForQuantization: boolean;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkTaskName(name: unknown, param = 'name'): string {
  if (typeof name !== 'string' || !TASK_NAME.test(name) || name.includes('..')) {
    throw InlaidError.invalid(`\`${param}\` must match ${TASK_NAME.source} (got ${JSON.stringify(name)})`, param);
  }
  return name;
}


function parseSlo(raw: unknown): Slo | null {
  if (raw === undefined || raw === null) return null;
  if (!isRecord(raw)) throw InlaidError.invalid('`slo` must be an object {ttft_ms, tpot_ms}', 'slo');
  const out: { ttft_ms?: number; tpot_ms?: number } = {};
  for (const key of ['ttft_ms', 'tpot_ms'] as const) {
    const v = raw[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v >= SLO_MS_MIN && v <= SLO_MS_MAX)) {
      throw InlaidError.invalid(`\`slo.${key}\` must be a number of milliseconds from ${SLO_MS_MIN} to ${SLO_MS_MAX} (got ${JSON.stringify(v) ?? String(v)})`, `slo.${key}`);
    }
    out[key] = v;
  }
  return out;
}

function parseCalibration(raw: unknown, required: boolean): CalibrationSource | null {
  if (raw === undefined || raw === null) {
    if (required) throw InlaidError.invalid('`calibration` is required (inline JSONL, {"jsonl": ...} or {"file_id": ...})', 'calibration');
    return null;
  }
  if (typeof raw === 'string') {
    checkCalibration(raw);
    return { kind: 'inline', jsonl: raw };
  }
  if (isRecord(raw) && typeof raw['jsonl'] === 'string') {
    checkCalibration(raw['jsonl'], 'calibration.jsonl');
    return { kind: 'inline', jsonl: raw['jsonl'] };
  }
  if (isRecord(raw) && typeof raw['file_id'] === 'string' && /^file-[a-f0-9]{16,64}$/.test(raw['file_id'])) {
    return { kind: 'file', fileId: raw['file_id'] };
  }
  throw InlaidError.invalid('`calibration` must be JSONL text, {"jsonl": "..."} or {"file_id": "file-..."}', 'calibration');
}

function parseBool(raw: unknown, param: string): boolean {
  if (raw === undefined || raw === null) return false;
  if (typeof raw === 'boolean') return raw;
  if (raw === 'true' || raw === 'false') return raw === 'true';
  throw InlaidError.invalid(`\`${param}\` must be a boolean`, param);
}

/** `uploaded`: the adapter came as multipart files (then `adapter` must be absent). */
export function parseCreateTask(body: unknown, uploaded: { adapter: boolean; calibration: boolean }): CreateTaskInput {
  if (!isRecord(body)) throw InlaidError.invalid('the request body must be a JSON object');
  const name = checkTaskName(body['name']);
  let adapterPath: string | null = null;
  const adapter = body['adapter'];
  if (uploaded.adapter) {
    if (adapter !== undefined) throw InlaidError.invalid('give either `adapter.path` or uploaded adapter files, not both', 'adapter');
  } else {
    if (!isRecord(adapter) || typeof adapter['path'] !== 'string' || adapter['path'].trim() === '') {
      throw InlaidError.invalid('`adapter.path` is required (or upload adapter_config.json + adapter_model.safetensors)', 'adapter.path');
    }
    adapterPath = adapter['path'];
  }
  return {
    name,
    adapterPath,
    calibration: uploaded.calibration ? null : parseCalibration(body['calibration'], true),
    slo: parseSlo(body['slo']),
    waitForQuantization: parseBool(body['wait_for_quantization'], 'wait_for_quantization'),
  };
}
