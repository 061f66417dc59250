import { RecordBuffer } from './record-buffer';

describe('RecordBuffer', () => {
  it('is due by size or by age, and take empties it', () => {
    const buf = new RecordBuffer<number>(3, 100);
    expect(buf.due(0)).toBe(false);
    buf.add(1, 0);
    buf.add(2, 10);
    expect(buf.due(50)).toBe(false);
    expect(buf.due(100)).toBe(true);
    buf.add(3, 20);
    expect(buf.due(21)).toBe(true);
    expect(buf.take()).toEqual([1, 2, 3]);
    expect(buf.size).toBe(0);
    expect(buf.due(1000)).toBe(false);
  });
});

describe('RecordBuffer when writes fail', () => {
  it('takes at most maxRows, requeues a failed batch in front and waits until retryAt', () => {
    const buf = new RecordBuffer<number>(2, 0, 10);
    [1, 2, 3].forEach((r) => buf.add(r, 0));
    const batch = buf.take();
    expect(batch).toEqual([1, 2]);
    buf.requeue(batch, 5, 100);
    expect(buf.due(50)).toBe(false);
    expect(buf.due(100)).toBe(true);
    expect(buf.take()).toEqual([1, 2]);
    expect(buf.take()).toEqual([3]);
  });

  it('bounds the buffer, dropping and counting the oldest rows', () => {
    const buf = new RecordBuffer<number>(100, 0, 3);
    [1, 2, 3, 4, 5].forEach((r) => buf.add(r, 0));
    expect(buf.take()).toEqual([3, 4, 5]);
    expect(buf.dropped).toBe(2);
  });
});
