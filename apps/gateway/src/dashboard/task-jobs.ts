/**
 * Task onboarding jobs for the dashboard and /metrics. The jobs table belongs to the task-onboarding feature
 * (TaskJob entity, progress = {stages: {name: {status, ...}}, layers: [{layer, numLayers, ...}]}). The table
 * is looked up by name at query time, so the dashboard runs against databases with or without it; rows are
 * read loosely (known column names, JSON progress) and normalised by the pure `normalizeJob`.
 */
import { DataSource } from 'typeorm';

export const JOB_TABLES = ['task_jobs', 'task_job'] as const;
const LIMIT = 50;

export interface StageProgress {
  readonly stage: string;
  readonly status: string | null;
  readonly fraction: number | null;
  readonly layersDone: number | null;
  readonly layersTotal: number | null;
}

export interface JobView {
  readonly id: string;
  readonly task: string;
  readonly kind: string | null;
  readonly status: string;
  readonly stage: string | null;
  readonly fraction: number | null;
  readonly layersDone: number | null;
  readonly layersTotal: number | null;
  readonly stages: readonly StageProgress[];
  readonly error: string | null;
  readonly updatedAt: string | null;
}

export interface JobsView {
  readonly available: boolean;
  readonly message: string | null;
  readonly jobs: readonly JobView[];
}

type Row = Record<string, unknown>;

function pick(row: Row, keys: readonly string[]): unknown {
  for (const k of keys) if (row[k] !== undefined && row[k] !== null) return row[k];
  return null;
}

function num(v: unknown): number | null {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) ? n : null;
}

function fractionOf(v: unknown): number | null {
  const n = num(v);
  if (n !== null) return n > 1 ? n / 100 : n;
  if (typeof v === 'object' && v !== null) {
    const o = v as Row;
    const direct = num(pick(o, ['fraction', 'ratio']));
    if (direct !== null) return direct;
    const pct = num(pick(o, ['percent', 'pct']));
    if (pct !== null) return pct / 100;
  }
  return null;
}

const DONE_STAGE = /^(done|skipped|completed|succeeded)$/i;
export const FINISHED_JOB = /^(active|serving|completed|done|succeeded|failed|deleted|cancelled)$/i;

/** Layers re-quantized so far, from `progress.layers` (TaskJob: [{layer, numLayers, ...}]) or done/total fields. */
function layersOf(progress: unknown): { done: number; total: number } | null {
  if (typeof progress !== 'object' || progress === null) return null;
  const layers = (progress as Row)['layers'];
  if (Array.isArray(layers) && layers.length > 0) {
    const total = Math.max(...layers.map((l) => num((l as Row)?.['numLayers'] ?? (l as Row)?.['num_layers']) ?? 0));
    return total > 0 ? { done: new Set(layers.map((l) => (l as Row)?.['layer'])).size, total } : null;
  }
  const done = num(pick(progress as Row, ['layersDone', 'layers_done']));
  const total = num(pick(progress as Row, ['layersTotal', 'layers_total', 'numLayers']));
  return done !== null && total !== null && total > 0 ? { done, total } : null;
}

function stageList(progress: unknown): StageProgress[] {
  if (typeof progress !== 'object' || progress === null) return [];
  const stages = (progress as Row)['stages'];
  if (typeof stages !== 'object' || stages === null) return [];
  const layers = layersOf(progress);
  const entries: Array<[string, unknown]> = Array.isArray(stages)
    ? stages.map((s, i) => [String((s as Row)?.['stage'] ?? (s as Row)?.['name'] ?? i), s])
    : Object.entries(stages as Row);
  // jsonb does not keep key order: order stages by when they started (unstarted last).
  const started = (v: unknown) => String((v as Row | null)?.['startedAt'] ?? (v as Row | null)?.['started_at'] ?? '\uffff');
  entries.sort((a, b) => started(a[1]).localeCompare(started(b[1])));
  return entries.map(([stage, v]) => {
    const o = (typeof v === 'object' && v !== null ? v : {}) as Row;
    const status = String(o['status'] ?? '');
    const running = status === 'running';
    const ownLayers = { done: num(pick(o, ['layersDone', 'layers_done'])), total: num(pick(o, ['layersTotal', 'layers_total'])) };
    const l = ownLayers.total !== null ? ownLayers : running && layers !== null ? layers : { done: null, total: null };
    const fraction = DONE_STAGE.test(status) ? 1 : l.total !== null && l.total > 0 ? (l.done ?? 0) / l.total : fractionOf(v) ?? (running ? 0 : null);
    return { stage, status: status === '' ? null : status, fraction, layersDone: l.done, layersTotal: l.total };
  });
}

function text(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Date) return v.toISOString();
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

export function normalizeJob(row: Row): JobView {
  const progress = pick(row, ['progress', 'data']);
  const stages = stageList(progress);
  const status = text(pick(row, ['status', 'state'])) ?? 'unknown';
  const layers = layersOf(progress);
  const finished = FINISHED_JOB.test(status) && !/failed/i.test(status);
  const byStages = stages.length > 0 ? stages.filter((s) => s.fraction === 1).length / stages.length : null;
  return {
    id: text(pick(row, ['id', 'job_id'])) ?? '?',
    task: text(pick(row, ['task', 'task_name', 'name'])) ?? '?',
    kind: text(pick(row, ['kind', 'type'])),
    status,
    stage: text(pick(row, ['stage', 'current_stage'])) ?? (FINISHED_JOB.test(status) ? null : status),
    fraction: finished ? 1 : (layers !== null ? layers.done / layers.total : null) ?? fractionOf(pick(row, ['fraction', 'percent'])) ?? byStages,
    layersDone: layers?.done ?? null,
    layersTotal: layers?.total ?? null,
    stages,
    error: text(pick(row, ['error', 'failed_reason', 'last_error'])),
    updatedAt: text(pick(row, ['updated_at', 'updatedAt', 'created_at', 'createdAt'])),
  };
}

/** The latest jobs, or an explanation when the onboarding feature's table does not exist yet. */
export async function readJobs(db: DataSource): Promise<JobsView> {
  for (const table of JOB_TABLES) {
    const [found] = await db.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [`public.${table}`]);
    if (found?.ok !== true) continue;
    const cols: Array<{ column_name: string }> = await db.query(
      `SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1`,
      [table],
    );
    const names = new Set(cols.map((c) => c.column_name));
    const order = ['updated_at', 'updatedAt', 'created_at', 'createdAt'].find((c) => names.has(c));
    const rows: Row[] = await db.query(
      `SELECT * FROM "${table}"${order === undefined ? '' : ` ORDER BY "${order}" DESC`} LIMIT ${LIMIT}`,
    );
    return { available: true, message: rows.length === 0 ? 'No onboarding jobs yet.' : null, jobs: rows.map(normalizeJob) };
  }
  return {
    available: false,
    message: `No task onboarding jobs table (${JOB_TABLES[0]}) in this database yet; this panel fills in once task onboarding is deployed.`,
    jobs: [],
  };
}
