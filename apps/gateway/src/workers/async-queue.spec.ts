import { AsyncQueue } from './async-queue';

async function drain<T>(q: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of q) out.push(x);
  return out;
}

describe('AsyncQueue', () => {
  it('delivers buffered and later items in order, then ends', async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    const done = drain(q);
    q.push(2);
    setTimeout(() => {
      q.push(3);
      q.end();
      q.push(4);
    }, 5);
    expect(await done).toEqual([1, 2, 3]);
  });

  it('delivers items pushed before a failure, then throws', async () => {
    const q = new AsyncQueue<string>();
    q.push('a');
    q.fail(new Error('worker gone'));
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const x of q) seen.push(x);
      })(),
    ).rejects.toThrow('worker gone');
    expect(seen).toEqual(['a']);
  });

  it('wakes a waiting consumer on failure', async () => {
    const q = new AsyncQueue<string>();
    const done = drain(q);
    setTimeout(() => q.fail(new Error('boom')), 5);
    await expect(done).rejects.toThrow('boom');
  });
});
