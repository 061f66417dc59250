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
   * jittered by ±20%; 0 turns the periodic pass off, the start-up pass stays; at most MAX_RECONCILE_MS): it enqueues a flow that a dead
   * gateway wrote but never enqueued, records a flow BullMQ failed with nobody to record it, and removes the
   * upload directories of failed tasks whose time has come (onboard-queues.service.ts).
   */
  readonly reconcileIntervalMs: number;
  /** A periodic pass leaves rows younger than this alone (INLAID_ONBOARD_RECONCILE_GRACE_MS, default 10000, at most 24 h): their gateway may be about to enqueue them. */
  readonly reconcileGraceMs: number;
  /**
   * How long a failed task that may have been in a re-quantization keeps its upload directory
   * (INLAID_FAILED_FILES_TTL_S, seconds, default 3600, 60 to 10 years; removed after that unless a run
   * under way holds the task in its batch). A task that failed before any re-quantization loses it at once
   * (task-files.ts).
   */
  readonly failedFilesTtlMs: number;
}

/** Each wait between reconciliation passes is the period times a factor in [1 - JITTER, 1 + JITTER] (onboard-queues.service.ts). */
export const RECONCILE_JITTER = 0.2;
/** The longest timer Node keeps (2^31 - 1 ms; a longer one fires after 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest period whose jittered wait still fits a timer (INLAID_ONBOARD_RECONCILE_MS, about 20.7 days). */
export const MAX_RECONCILE_MS = Math.floor(MAX_TIMER_MS / (1 + RECONCILE_JITTER));
/** 24 h: the grace is a few seconds' worth of a gateway writing a row and then enqueuing its flow. */
export const MAX_RECONCILE_GRACE_MS = 24 * 3600 * 1000;
/**
 * A failed task's files stay at least a minute: the TTL, not only the running-batches check, guards a run that
 * read its batch (the task still quantizing) and has not yet written it on its rows (onboard-steps.ts).
 */
export const MIN_FAILED_FILES_TTL_S = 60;
/** 10 years (Postgres takes `now() - ttl` far beyond that, but nothing needs more). */
export const MAX_FAILED_FILES_TTL_S = 10 * 365 * 24 * 3600;

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
  const int = (variable: string, fallback: string, { min, max, unit, off }: { min: number; max: number; unit: string; off?: boolean }): number => {
    const raw = env[variable]?.trim() || fallback;
    if (!/^\d+$/.test(raw)) throw new TasksConfigError(variable, `expected a non-negative integer (${unit}), got "${raw}"`);
    const n = Number(raw);
    if (off === true && n === 0) return 0;
    if (n < min || n > max) throw new TasksConfigError(variable, `expected ${off === true ? '0 (off) or ' : ''}${min} to ${max} ${unit}, got ${raw}`);
    return n;
  };
  const reconcileIntervalMs = int('INLAID_ONBOARD_RECONCILE_MS', '30000', { min: 100, max: MAX_RECONCILE_MS, unit: 'ms', off: true });
  const reconcileGraceMs = int('INLAID_ONBOARD_RECONCILE_GRACE_MS', '10000', { min: 0, max: MAX_RECONCILE_GRACE_MS, unit: 'ms' });
  const failedFilesTtlMs = 1000 * int('INLAID_FAILED_FILES_TTL_S', '3600', { min: MIN_FAILED_FILES_TTL_S, max: MAX_FAILED_FILES_TTL_S, unit: 's' });
  return Object.freeze({
    adapterRoots: Object.freeze([...roots.map((r) => resolve(r)), dataDir]),
    dataDir,
    queuePrefix: prefix,
    maxUploadBytes: Number(maxRaw),
    reconcileIntervalMs,
    reconcileGraceMs,
    failedFilesTtlMs,
  });
}
