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
