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
  /**
   * How often a live gateway reconciles onboardings (INLAID_ONBOARD_RECONCILE_MS, default 30000; each wait is
   * jittered by ±20%; 0 turns the periodic pass off, the start-up pass stays): it enqueues a flow that a dead
   * gateway wrote but never enqueued, records a flow BullMQ failed with nobody to record it, and removes the
   * upload directories of failed tasks whose time has come (onboard-queues.service.ts).
   */
  readonly reconcileIntervalMs: number;
  /** A periodic pass leaves rows younger than this alone (INLAID_ONBOARD_RECONCILE_GRACE_MS, default 10000): their gateway may be about to enqueue them. */
  readonly reconcileGraceMs: number;
  /**
   * How long a failed task that may have been in a re-quantization keeps its upload directory
   * (INLAID_FAILED_FILES_TTL_S, default 3600; removed after that once no re-quantization step is running). A
   * task that failed before any re-quantization loses it at once (task-files.ts).
   */
  readonly failedFilesTtlMs: number;
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
  const ms = (variable: string, fallback: string, scale = 1): number => {
    const raw = env[variable]?.trim() || fallback;
    if (!/^\d+$/.test(raw)) throw new TasksConfigError(variable, `expected a non-negative integer, got "${raw}"`);
    return Number(raw) * scale;
  };
  const reconcileIntervalMs = ms('INLAID_ONBOARD_RECONCILE_MS', '30000');
  if (reconcileIntervalMs !== 0 && reconcileIntervalMs < 100) throw new TasksConfigError('INLAID_ONBOARD_RECONCILE_MS', `expected 0 (off) or at least 100, got ${reconcileIntervalMs}`);
  return Object.freeze({
    adapterRoots: Object.freeze([...roots.map((r) => resolve(r)), dataDir]),
    dataDir,
    queuePrefix: prefix,
    maxUploadBytes: Number(maxRaw),
    reconcileIntervalMs,
    reconcileGraceMs: ms('INLAID_ONBOARD_RECONCILE_GRACE_MS', '10000'),
    failedFilesTtlMs: ms('INLAID_FAILED_FILES_TTL_S', '3600', 1000),
  });
}
