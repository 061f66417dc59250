/**
 * Accumulates rows until a size or age threshold says to flush them as one batch (pure, clock injected).
 * A failed batch is put back in front (`requeue`) and nothing is due again before `retryAt`. The buffer
 * holds at most `capacity` rows; beyond that the oldest rows are dropped and counted in `dropped`.
 */
export class RecordBuffer<T> {
  private rows: T[] = [];
  private oldestAt: number | null = null;
  private retryAt = 0;
  dropped = 0;

  constructor(
    private readonly maxRows: number,
    private readonly maxAgeMs: number,
    private readonly capacity = Number.POSITIVE_INFINITY,
  ) {}

  get size(): number {
    return this.rows.length;
  }

  add(row: T, now: number): void {
    if (this.rows.length === 0) this.oldestAt = now;
    this.rows.push(row);
    this.trim();
  }

  due(now: number): boolean {
    if (this.rows.length === 0 || now < this.retryAt) return false;
    return this.rows.length >= this.maxRows || now - (this.oldestAt ?? now) >= this.maxAgeMs;
  }

  /** At most `maxRows` of the oldest rows. */
  take(): T[] {
    const rows = this.rows.slice(0, this.maxRows);
    this.rows = this.rows.slice(rows.length);
    if (this.rows.length === 0) this.oldestAt = null;
    return rows;
  }

  /** Puts a batch that could not be written back in front; nothing is due before `retryAt`. */
  requeue(rows: readonly T[], now: number, retryAt: number): void {
    this.rows = [...rows, ...this.rows];
    this.oldestAt = Math.min(this.oldestAt ?? now, now);
    this.retryAt = retryAt;
    this.trim();
  }

  private trim(): void {
    const over = this.rows.length - this.capacity;
    if (over <= 0) return;
    this.rows = this.rows.slice(over);
    this.dropped += over;
  }
}
