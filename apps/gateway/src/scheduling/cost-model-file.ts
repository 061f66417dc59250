/**
 * INLAID_COST_MODEL: reads the workers' calibrated step cost model (the JSON format of
 * libs/sim/calibration/*.json, parsed by @inlaid/scheduling's parseCostModel) once at start-up and gives the
 * StepCost the scheduler plans each worker with. A missing, unreadable or invalid file fails start-up with an
 * error naming the variable and the path; no setting = no step cost (the step budget and batched admission
 * stay inactive, as before).
 */
import { readFileSync } from 'node:fs';
import { parseCostModel, StepCost, stepCostOf } from '@inlaid/scheduling';

export class CostModelFileError extends Error {
  constructor(message: string) {
    super(`INLAID_COST_MODEL: ${message}`);
    this.name = 'ConfigError';
  }
}

/** The step cost in the file at `path`, or undefined when `path` is null (the setting is unset). */
export function loadStepCost(path: string | null): StepCost | undefined {
  if (path === null) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CostModelFileError(`cannot read "${path}": ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CostModelFileError(`"${path}" is not valid JSON: ${(err as Error).message}`);
  }
  try {
    return stepCostOf(parseCostModel(json, `"${path}"`));
  } catch (err) {
    throw new CostModelFileError((err as Error).message);
  }
}
