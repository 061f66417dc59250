/**
 * A bounded time-based cache of key lookups (pure, clock injected). Fresh entries answer directly; when the
 * database is unreachable, positive entries up to `staleMs` old keep known keys working.
 */
export class KeyCache<V> {
  private readonly entries = new Map<string, { value: V | null; at: number }>();

  constructor(
    private readonly freshMs: number,
    private readonly staleMs: number,
    private readonly maxEntries: number,
  ) {}

  fresh(hash: string, now: number): { value: V | null } | undefined {
    const e = this.entries.get(hash);
    return e !== undefined && now - e.at < this.freshMs ? { value: e.value } : undefined;
  }

  stale(hash: string, now: number): V | null {
    const e = this.entries.get(hash);
    return e !== undefined && e.value !== null && now - e.at < this.staleMs ? e.value : null;
  }

  set(hash: string, value: V | null, now: number): void {
    if (this.entries.size >= this.maxEntries && !this.entries.has(hash)) this.evictOldest();
    this.entries.set(hash, { value, at: now });
  }

  private evictOldest(): void {
    const first = this.entries.keys().next();
    if (first.done !== true) this.entries.delete(first.value);
  }
}
