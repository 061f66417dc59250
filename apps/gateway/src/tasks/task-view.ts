/** The JSON shape of a task in GET /v1/tasks[/{name}] (pure). */
import type { TaskJob } from '@inlaid/db';

export interface TaskViewJson {
  object: 'task';
  name: string;
  status: string;
  job_id: string;
  kind: string;
  adapter_path: string | null;
  slo: TaskJob['slo'];
  wait_for_quantization: boolean;
  checkpoint_version: number | null;
  error: string | null;
  progress: {
    stages: TaskJob['progress']['stages'];
    layers_done: number;
    num_layers: number | null;
    layers: TaskJob['progress']['layers'];
    batch: string[];
    quantizer: string | null;
    workers: NonNullable<TaskJob['progress']['workers']>;
  };
  created_at: string;
  updated_at: string;
  history?: Array<{ job_id: string; kind: string; status: string; events: TaskJob['history'] }>;
}

export function taskView(job: TaskJob, history?: readonly TaskJob[]): TaskViewJson {
  const layers = job.progress.layers ?? [];
  return {
    object: 'task',
    name: job.task,
    status: job.status,
    job_id: job.id,
    kind: job.kind,
    adapter_path: job.adapterPath,
    slo: job.slo,
    wait_for_quantization: job.waitForQuantization,
    checkpoint_version: job.checkpointVersion,
    error: job.error,
    progress: {
      stages: job.progress.stages,
      layers_done: layers.length,
      num_layers: layers[0]?.numLayers ?? null,
      layers,
      batch: job.progress.batch ?? [],
      quantizer: job.progress.quantizer ?? null,
      workers: job.progress.workers ?? {},
    },
    created_at: job.createdAt.toISOString(),
    updated_at: job.updatedAt.toISOString(),
    ...(history === undefined ? {} : { history: history.map((h) => ({ job_id: h.id, kind: h.kind, status: h.status, events: h.history })) }),
  };
}
