/**
 * Settings of task onboarding (POST /v1/tasks): where adapters may be read from, where uploads and
 * calibration files are kept, and the BullMQ key prefix. Pure: takes the env as an argument.
 */
import { resolve } from 'node:path';

export interface TasksConfig {
  /** Directories an adapter path must resolve under (INLAID_ADAPTER_ROOT, comma-separated; plus dataDir). */
  readonly adapterRoots: readonly string[];
  /** Uploaded adapters and calibration files (INLAID_DATA_DIR). */
  readonly dataDir: string;
  /** BullMQ key prefix (INLAID_QUEUE_PREFIX), so several deployments can share one Redis. */
  readonly queuePrefix: string;
  /** Largest accepted adapter or calibration upload, bytes (INLAID_MAX_UPLOAD_BYTES). */
  readonly maxUploadBytes: number;
}

type Env = Readonly<Record<string, string | undefined>>;

export class TasksConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export function parseTasksConfig(env: Env): TasksConfig {
  const roots = (env['INLAID_ADAPTER_ROOT']?.trim() || 'assets/adapters').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const dataDir = resolve(env['INLAID_DATA_DIR']?.trim() || 'data');
  const prefix = env['INLAID_QUEUE_PREFIX']?.trim() || 'inlaid';
  if (!/^[A-Za-z0-9_-]+$/.test(prefix)) throw new TasksConfigError('INLAID_QUEUE_PREFIX', `expected [A-Za-z0-9_-]+, got "${prefix}"`);
  const maxRaw = env['INLAID_MAX_UPLOAD_BYTES']?.trim() || String(512 * 1024 * 1024);
  if (!/^\d+$/.test(maxRaw) || Number(maxRaw) <= 0) throw new TasksConfigError('INLAID_MAX_UPLOAD_BYTES', `expected a positive integer, got "${maxRaw}"`);
  return Object.freeze({
    adapterRoots: Object.freeze([...roots.map((r) => resolve(r)), dataDir]),
    dataDir,
    queuePrefix: prefix,
    maxUploadBytes: Number(maxRaw),
  });
}
