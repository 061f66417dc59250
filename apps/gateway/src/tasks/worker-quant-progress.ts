/** One worker's progress event in a shared re-quantization, as stored in task_jobs.progress.workers (pure). */
import type { WorkerQuantProgress } from '@inlaid/db';
import { worker } from '@inlaid/proto';
import type { WorkerRole } from './shared-requantize';

const STAGES: Partial<Record<worker.RequantizeProgress_Stage, WorkerQuantProgress['stage']>> = {
  [worker.RequantizeProgress_Stage.STAGE_PLANNED]: 'planned',
  [worker.RequantizeProgress_Stage.STAGE_LAYER]: 'layer',
  [worker.RequantizeProgress_Stage.STAGE_DONE]: 'done',
  [worker.RequantizeProgress_Stage.STAGE_FAILED]: 'failed',
};

/**
 * The worker's entry after event `p` (`prev`: its entry before; null for events without a stage). `layersDone`
 * follows the latest layer event (a run restarted by a new quantizer starts over at 0); done and failed keep
 * the count they reached.
 */
export function workerQuantProgress(
  p: worker.RequantizeProgress,
  role: WorkerRole,
  prev: WorkerQuantProgress | undefined,
  at = new Date(),
): WorkerQuantProgress | null {
  const stage = STAGES[p.stage];
  if (stage === undefined) return null;
  const numLayers = p.numLayers > 0 ? p.numLayers : (prev?.numLayers ?? null);
  const layersDone = stage === 'layer' ? p.layer + 1 : stage === 'planned' ? 0 : (prev?.layersDone ?? 0);
  return {
    role,
    stage,
    layersDone,
    numLayers,
    checkpointVersion: stage === 'done' || p.checkpointVersion > 0 ? p.checkpointVersion : null,
    ...(p.message ? { message: p.message } : {}),
    at: at.toISOString(),
  };
}
