/**
 * `mlfq`: FastServe's skip-join multi-level feedback queue at iteration level. A new request joins
 * the highest level whose quantum covers its prefill (long prompts skip the top levels); it is
 * demoted one level each time it uses up its level's quantum of decode tokens. Lower level first,
 * then arrival. Simplification: a running request is not paused in favour of a higher-level one;
 * levels decide admission order and memory-pressure victims (lowest level evicted first).
 */
import { MlfqOptions } from '../config';
import { contextTokens, TrackedRequest } from '../tracked';
import { Policy } from './policy';

export class MlfqPolicy implements Policy {
  readonly name = 'mlfq' as const;
  readonly headOfLineBlocking = true;
  readonly budgetSafety = undefined;
  readonly triage = false;
  readonly starvingPausesAdmission = true;

  constructor(private readonly opts: MlfqOptions) {}

  quantum(level: number): number {
    return this.opts.quantumTokens * 2 ** level;
  }

  onArrive(r: TrackedRequest): void {
    const units = r.spec.promptTokens / this.opts.prefillTokensPerUnit;
    let level = 0;
    while (level < this.opts.levels - 1 && this.quantum(level) < units) level++;
    r.level = level;
    r.levelTokens = 0;
  }
  promotesStarving(): boolean {
    return true;
  }
  waitingKey(r: TrackedRequest): number[] {
    return [r.level, r.spec.arrivalS];
  }
  headKey(_r: TrackedRequest, key: number[]): number[] {
    return key;
  }
  evictionKey(r: TrackedRequest): number[] {
    return [r.level, r.spec.arrivalS];
  }
  canJoin(): boolean {
    return true;
  }
  canFill(): boolean {
    return false;
  }
  /** Any task joins; nothing fills. */
  refusesNewTasks(phase: 'join' | 'fill'): boolean {
    return phase === 'fill';
  }
  reservedTokens(r: TrackedRequest): number {
    return contextTokens(r) + 1;
  }
  onToken(r: TrackedRequest): void {
    r.levelTokens += 1;
    if (r.levelTokens >= this.quantum(r.level) && r.level < this.opts.levels - 1) {
      r.level += 1;
      r.levelTokens = 0;
    }
  }
}
