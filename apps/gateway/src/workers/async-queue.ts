/**
 * A single-consumer async queue: producers push/end/fail, one consumer iterates with for-await. Items
 * pushed before a failure are still delivered before the error is thrown.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | null = null;
  private failWaiter: ((err: Error) => void) | null = null;
  private closed = false;
  private error: Error | null = null;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Items pushed and not yet taken by the consumer. */
  get length(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.closed) return;
    if (this.waiter !== null) this.settle()?.({ value: item, done: false });
    else this.items.push(item);
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.settle()?.({ value: undefined, done: true });
  }

  fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.error = err;
    const reject = this.failWaiter;
    this.waiter = null;
    this.failWaiter = null;
    reject?.(err);
  }

  private settle(): ((r: IteratorResult<T>) => void) | null {
    const resolve = this.waiter;
    this.waiter = null;
    this.failWaiter = null;
    return resolve;
  }

  private next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.error !== null) return Promise.reject(this.error);
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== null) return Promise.reject(new Error('AsyncQueue supports a single consumer'));
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}
