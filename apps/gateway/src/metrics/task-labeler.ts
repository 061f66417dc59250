/**
 * Keeps the `task` label of gateway metrics bounded with thousands of tasks (pure, clock-free).
 *
 * At most `maxLabelled` tasks carry their own label; every other task is reported as task="other". Traffic
 * is counted in a Space-Saving sketch of `capacity` entries (so memory stays bounded even if clients send
 * random model names). While fewer than `maxLabelled` tasks are labelled, a new task gets a label at once.
 * `rerank()` (called every minute or so) re-picks the labelled set as the top tasks by recent traffic,
 * favouring incumbents by `hysteresis` so labels do not flap, then halves every count (recent traffic weighs
 * more). A demoted task's series are dropped by the caller; from then on its traffic counts under "other".
 * A task actually named "other" is merged with the aggregate.
 */
export const OTHER = 'other';

export interface LabelerOptions {
  readonly maxLabelled: number;
  readonly capacity: number;
  readonly hysteresis: number;
}

export const DEFAULT_LABELER: LabelerOptions = { maxLabelled: 50, capacity: 1000, hysteresis: 2 };

export interface Rerank {
  readonly promoted: readonly string[];
  readonly demoted: readonly string[];
}

export class TaskLabeler {
  private readonly counts = new Map<string, number>();
  private readonly labelled = new Set<string>();

  constructor(private readonly options: LabelerOptions = DEFAULT_LABELER) {
    if (!(options.maxLabelled >= 1) || options.capacity < options.maxLabelled || !(options.hysteresis >= 1)) {
      throw new Error('TaskLabeler: need maxLabelled >= 1, capacity >= maxLabelled and hysteresis >= 1');
    }
  }

  /** Counts one request of `task` and returns the label to report it under. */
  label(task: string, weight = 1): string {
    this.count(task, weight);
    if (this.labelled.has(task)) return task;
    if (task !== OTHER && this.labelled.size < this.options.maxLabelled) {
      this.labelled.add(task);
      return task;
    }
    return OTHER;
  }

  /** The label a task is reported under now, without counting anything. */
  peek(task: string): string {
    return this.labelled.has(task) ? task : OTHER;
  }

  isLabelled(task: string): boolean {
    return this.labelled.has(task);
  }

  get labelledTasks(): readonly string[] {
    return [...this.labelled].sort();
  }

  get trackedTasks(): number {
    return this.counts.size;
  }

  rerank(): Rerank {
    const { maxLabelled, hysteresis } = this.options;
    const score = (t: string, n: number) => n * (this.labelled.has(t) ? hysteresis : 1);
    const next = new Set(
      [...this.counts]
        .filter(([t, n]) => t !== OTHER && n > 0)
        .sort((a, b) => score(b[0], b[1]) - score(a[0], a[1]) || a[0].localeCompare(b[0]))
        .slice(0, maxLabelled)
        .map(([t]) => t),
    );
    const demoted = [...this.labelled].filter((t) => !next.has(t)).sort();
    const promoted = [...next].filter((t) => !this.labelled.has(t)).sort();
    this.labelled.clear();
    for (const t of next) this.labelled.add(t);
    for (const [t, n] of this.counts) {
      const half = Math.floor(n / 2);
      if (half === 0 && !this.labelled.has(t)) this.counts.delete(t);
      else this.counts.set(t, half);
    }
    return { promoted, demoted };
  }

  private count(task: string, weight: number): void {
    const n = this.counts.get(task);
    if (n !== undefined) {
      this.counts.set(task, n + weight);
      return;
    }
    if (this.counts.size < this.options.capacity) {
      this.counts.set(task, weight);
      return;
    }
    // Space-Saving: the newcomer takes over the smallest unlabelled counter and inherits its count.
    let victim: string | null = null;
    let min = Number.POSITIVE_INFINITY;
    for (const [t, c] of this.counts) {
      if (c < min && !this.labelled.has(t)) {
        min = c;
        victim = t;
      }
    }
    if (victim === null) return;
    this.counts.delete(victim);
    this.counts.set(task, min + weight);
  }
}
