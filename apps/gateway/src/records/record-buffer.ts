/** Accumulates rows until a size or age threshold says to flush them as one batch (pure, clock injected). */
export class RecordBuffer<T> {
  private rows: T[] = [];
  private oldestAt: number | null = null;

  constructor(
    private readonly maxRows: number,
    private readonly maxAgeMs: number,
  ) {}

  get size(): number {
    return this.rows.length;
  }

  add(row: T, now: number): void {
    if (this.rows.length === 0) this.oldestAt = now;
    this.rows.push(row);
  }

  due(now: number): boolean {
    if (this.rows.length === 0) return false;
    return this.rows.length >= this.maxRows || now - (this.oldestAt ?? now) >= this.maxAgeMs;
  }

  take(): T[] {
    const rows = this.rows;
    this.rows = [];
    this.oldestAt = null;
    return rows;
  }
}
