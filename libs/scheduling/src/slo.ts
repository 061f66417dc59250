/** Per-task SLO table and the SLO arithmetic shared by the scheduler and the simulator. */
import { Slo } from './types';

export const DEFAULT_SLO: Slo = { ttftS: 5, tpotS: 0.2 };

export class SloTable {
  constructor(
    private readonly fallback: Slo = DEFAULT_SLO,
    private readonly perTask: Readonly<Record<string, Slo>> = {},
  ) {
    for (const [task, slo] of Object.entries({ default: fallback, ...perTask })) validateSlo(task, slo);
  }

  /** Own entries only: a task named like an Object member (`constructor`, `toString`) gets the fallback, not it. */
  of(task: string): Slo {
    return Object.hasOwn(this.perTask, task) ? this.perTask[task] : this.fallback;
  }
}

export function validateSlo(task: string, slo: Slo): void {
  if (!(slo.ttftS > 0) || !(slo.tpotS > 0)) throw new Error(`SLO for "${task}" needs positive ttftS and tpotS`);
}

/** Mean time per output token after the first (0 for single-token outputs). */
export function tpotOf(firstTokenS: number, finishS: number, outputTokens: number): number {
  return outputTokens > 1 ? (finishS - firstTokenS) / (outputTokens - 1) : 0;
}

export function meetsSlo(slo: Slo, ttftS: number, tpotS: number): boolean {
  return ttftS <= slo.ttftS && tpotS <= slo.tpotS;
}
