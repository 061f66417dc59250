/**
 * Task placement over workers (pure): every task with requests in flight has one home worker, and only
 * its home admits the task's waiting requests, so a task's requests run together (one adapter, one KV
 * pool) instead of each worker loading every adapter.
 *
 * Load of a worker = requests in flight (waiting or running) of the tasks homed there. Candidates for a
 * task = the workers not holding it (an adapter catch-up may still load, replace or unload it there: setWorker's
 * `holds`) that list it (resident adapters / model cards); when none does, every worker not holding it. A task only
 * holding workers could take has no home (its requests wait) until a worker lists it or lets it go (its next setWorker).
 * Bounded imbalance: an active task keeps its home while load(home) <= minLoad + max(slack, ratio *
 * minLoad), minLoad being the least loaded candidate's. Past that bound it moves to the least loaded
 * candidate, but only when its own in-flight count is below the gap (the move narrows the gap, so tasks
 * never ping-pong; a task hotter than the gap stays where it is). An idle task has no home: its next
 * request goes to the least loaded candidate, ties by configured worker order. A leaving worker's active
 * tasks are placed again at once, busiest first; a joining worker starts at load 0 and so gets the next
 * new tasks (and tasks moved off overloaded workers).
 */

export interface PlacementOptions {
  /** Requests of imbalance always tolerated before an active task moves. */
  readonly slack: number;
  /** Extra tolerated imbalance as a fraction of the least loaded candidate's load. */
  readonly ratio: number;
}

export const DEFAULT_PLACEMENT: PlacementOptions = { slack: 4, ratio: 0.25 };

export class Placement {
  /** addr -> tasks the worker lists. */
  private readonly workers = new Map<string, ReadonlySet<string>>();
  /** addr -> whether the worker holds a task (not to be placed there even when no worker lists it). */
  private readonly holding = new Map<string, (task: string) => boolean>();
  private readonly loads = new Map<string, number>();
  private readonly homes = new Map<string, string>();
  /** task -> requests in flight (only tasks with at least one). */
  private readonly active = new Map<string, number>();

  constructor(
    private readonly order: readonly string[] = [],
    private readonly options: PlacementOptions = DEFAULT_PLACEMENT,
  ) {
    if (!(Number.isFinite(options.slack) && options.slack >= 0)) throw new Error(`placement slack must be a number >= 0, got ${options.slack}`);
    if (!(Number.isFinite(options.ratio) && options.ratio >= 0)) throw new Error(`placement ratio must be a number >= 0, got ${options.ratio}`);
  }

  homeOf(task: string): string | undefined {
    return this.homes.get(task);
  }

  load(addr: string): number {
    return this.loads.get(addr) ?? 0;
  }

  /**
   * Adds a worker or updates what it lists and holds; active tasks its home no longer serves move elsewhere, and
   * homeless ones are placed. `holds`: the tasks its adapter catch-up may still load, replace or unload there
   * (WorkerConnection.pendingFor, asked at each placement: call this again when it changes): never placed there, not
   * even when no worker lists them (before, such a task fell back to every worker, this one included: a 404 there, or
   * the old adapter).
   */
  setWorker(addr: string, tasks: Iterable<string>, holds: (task: string) => boolean = () => false): void {
    this.workers.set(addr, new Set(tasks));
    this.holding.set(addr, holds);
    if (!this.loads.has(addr)) this.loads.set(addr, 0);
    this.placeAgain([...this.active.keys()].filter((t) => {
      const home = this.homes.get(t);
      return home === undefined || (home === addr && !this.candidates(t).includes(addr));
    }));
  }

  /** Forgets a worker; its active tasks are placed again at once (homeless if no worker is left). */
  removeWorker(addr: string): void {
    if (!this.workers.delete(addr)) return;
    this.holding.delete(addr);
    this.loads.delete(addr);
    this.placeAgain([...this.homes].filter(([, home]) => home === addr).map(([task]) => task));
  }

  /**
   * A request of `task` arrives: returns the worker that will run it, or undefined when no worker may take the task
   * now (none, or only workers holding it): it waits homeless until setWorker places it.
   */
  arrive(task: string): string | undefined {
    const n = this.active.get(task) ?? 0;
    const home = this.homes.get(task);
    const target = n > 0 && home !== undefined ? this.keepOrMove(task, home, n) : this.leastLoaded(this.candidates(task));
    if (home !== undefined && home !== target) this.shift(home, -n);
    this.active.set(task, n + 1);
    if (target === undefined) {
      this.homes.delete(task);
      return undefined;
    }
    if (home !== target) this.shift(target, n);
    this.homes.set(task, target);
    this.shift(target, 1);
    return target;
  }

  /** A request of `task` left (finished, cancelled or failed). */
  leave(task: string): void {
    const n = this.active.get(task);
    if (n === undefined) throw new Error(`placement: no request of task "${task}" is in flight`);
    const home = this.homes.get(task);
    if (home !== undefined) this.shift(home, -1);
    if (n > 1) {
      this.active.set(task, n - 1);
    } else {
      this.active.delete(task);
      this.homes.delete(task);
    }
  }

  private keepOrMove(task: string, home: string, n: number): string | undefined {
    const cands = this.candidates(task);
    const least = this.leastLoaded(cands);
    if (least === undefined || !cands.includes(home)) return least;
    const min = this.load(least);
    const gap = this.load(home) - min;
    if (gap <= Math.max(this.options.slack, this.options.ratio * min)) return home;
    return n < gap ? least : home;
  }

  private placeAgain(tasks: string[]): void {
    tasks.sort((x, y) => (this.active.get(y) ?? 0) - (this.active.get(x) ?? 0));
    for (const task of tasks) {
      const n = this.active.get(task) ?? 0;
      const home = this.homes.get(task);
      if (home !== undefined && this.workers.has(home)) this.shift(home, -n);
      this.homes.delete(task);
      if (n === 0) continue;
      const target = this.leastLoaded(this.candidates(task));
      if (target === undefined) continue; // no worker left: the dispatcher fails these requests
      this.homes.set(task, target);
      this.shift(target, n);
    }
  }

  private candidates(task: string): string[] {
    // a worker holding the task (its catch-up may still load, replace or unload it) is no candidate either way
    const free = [...this.workers.keys()].filter((a) => this.holding.get(a)?.(task) !== true);
    const listing = free.filter((a) => this.workers.get(a)?.has(task) === true);
    return listing.length > 0 ? listing : free;
  }

  private leastLoaded(addrs: readonly string[]): string | undefined {
    const pos = (a: string): number => {
      const i = this.order.indexOf(a);
      return i < 0 ? this.order.length : i;
    };
    const sorted = [...addrs].sort((a, b) => this.load(a) - this.load(b) || pos(a) - pos(b) || a.localeCompare(b));
    return sorted[0];
  }

  private shift(addr: string, by: number): void {
    if (this.loads.has(addr)) this.loads.set(addr, this.load(addr) + by);
  }
}
