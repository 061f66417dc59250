/**
 * What each worker listed in its last report (pure): on a report, the names it did not list in the one before (all of
 * them on its first report, or after `forget`). TaskSyncService writes only those adapters; TaskSloSync reads the tasks'
 * targets again when there are any.
 */
export class ReportedNames {
  private readonly last = new Map<string, ReadonlySet<string>>();

  /** Keeps `names` as worker `addr`'s report; the ones new since its previous report, each once, in order. */
  report(addr: string, names: readonly string[]): string[] {
    const before = this.last.get(addr);
    const now = new Set(names);
    this.last.set(addr, now);
    return [...now].filter((n) => before === undefined || !before.has(n));
  }

  /** Its next report counts as its first (it reconnected, or what it reported was not acted on). */
  forget(addr: string): void {
    this.last.delete(addr);
  }
}
