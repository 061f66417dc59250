import { OTHER, TaskLabeler } from './task-labeler';

describe('TaskLabeler (bounded task label cardinality)', () => {
  it('labels the first tasks at once, then aggregates the rest as "other"', () => {
    const l = new TaskLabeler({ maxLabelled: 2, capacity: 10, hysteresis: 2 });
    expect([l.label('a'), l.label('b'), l.label('c'), l.label('a')]).toEqual(['a', 'b', OTHER, 'a']);
    expect(l.labelledTasks).toEqual(['a', 'b']);
  });

  it('keeps at most maxLabelled + 1 label values and bounded memory with thousands of tasks', () => {
    const l = new TaskLabeler({ maxLabelled: 50, capacity: 500, hysteresis: 2 });
    const seen = new Set<string>();
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 5000; i++) seen.add(l.label(`task-${(i * 7919 + round) % 5000}`));
      l.rerank();
    }
    expect(seen.size).toBeLessThanOrEqual(51 + 50 * 5); // per rerank at most 50 new labels
    expect(l.labelledTasks.length).toBe(50);
    expect(l.trackedTasks).toBeLessThanOrEqual(500);
  });

  it('promotes heavy hitters on rerank and keeps incumbents within the hysteresis', () => {
    const l = new TaskLabeler({ maxLabelled: 2, capacity: 10, hysteresis: 2 });
    l.label('a');
    l.label('b');
    for (let i = 0; i < 30; i++) l.label('hot');
    for (let i = 0; i < 15; i++) l.label('b');
    expect(l.rerank()).toEqual({ promoted: ['hot'], demoted: ['a'] });
    expect(l.label('hot')).toBe('hot');
    expect(l.label('a')).toBe(OTHER);
    // after decay: hot 15+1, b 8; 'c' at 12 beats b's raw count but not 8 * 2
    for (let i = 0; i < 12; i++) l.label('c');
    expect(l.rerank()).toEqual({ promoted: [], demoted: [] });
  });

  it('never labels a task called "other" separately and validates options', () => {
    const l = new TaskLabeler({ maxLabelled: 3, capacity: 3, hysteresis: 1 });
    expect(l.label(OTHER)).toBe(OTHER);
    expect(l.labelledTasks).toEqual([]);
    expect(() => new TaskLabeler({ maxLabelled: 5, capacity: 2, hysteresis: 1 })).toThrow(/capacity/);
  });
});
