import { Placement } from './placement';

function twoWorkers(options = { slack: 2, ratio: 0 }) {
  const p = new Placement(['a', 'b'], options);
  p.setWorker('a', ['sql', 'poet', 'chat']);
  p.setWorker('b', ['sql', 'poet', 'chat']);
  return p;
}
const arriveN = (p: Placement, task: string, n: number): Array<string | undefined> => Array.from({ length: n }, () => p.arrive(task));

describe('Placement', () => {
  it('keeps a task on one worker and spreads distinct tasks (ties by configured order)', () => {
    const p = twoWorkers();
    expect(arriveN(p, 'sql', 3)).toEqual(['a', 'a', 'a']);
    expect(arriveN(p, 'poet', 3)).toEqual(['b', 'b', 'b']);
    expect(p.arrive('chat')).toBe('a'); // 3 vs 3: configured order
    expect([p.load('a'), p.load('b')]).toEqual([4, 3]);
  });

  it('only places a task on workers that list it, unless none does', () => {
    const p = new Placement(['a', 'b']);
    p.setWorker('a', ['sql']);
    p.setWorker('b', ['poet']);
    expect(arriveN(p, 'poet', 2)).toEqual(['b', 'b']);
    expect(p.arrive('base-model')).toBe('a'); // listed nowhere: any worker, least loaded
  });

  it('never falls back to a worker holding the task (its catch-up): homeless until that worker lets it go or lists it', () => {
    const p = new Placement(['a', 'b']);
    p.setWorker('a', ['base']);
    p.setWorker('b', ['base'], (t) => t === 'sql'); // b restarted: its catch-up may still load sql there
    expect(p.arrive('sql')).toBe('a'); // listed nowhere: a, though b is as idle (before: also b's turn, by load)
    p.leave('sql');
    arriveN(p, 'base', 3); // a: 3, b: 0
    expect(p.arrive('sql')).toBe('a'); // before: b, the least loaded, which lacks it (a 404 at Admit)
    p.leave('sql');
    for (let i = 0; i < 3; i++) p.leave('base');
    // a rolling restart: a leaves while sql waits; its only other worker holds it
    arriveN(p, 'sql', 2);
    expect(p.homeOf('sql')).toBe('a');
    p.removeWorker('a');
    expect(p.homeOf('sql')).toBeUndefined(); // before: b, where its requests got a 404 or the old adapter
    expect(p.load('b')).toBe(0);
    expect(p.arrive('sql')).toBeUndefined(); // a new one waits with them
    p.setWorker('b', ['base', 'sql']); // the catch-up loaded it and released the hold ('info')
    expect(p.homeOf('sql')).toBe('b');
    expect(p.load('b')).toBe(3);
    for (let i = 0; i < 3; i++) p.leave('sql');
    expect(p.load('b')).toBe(0);
  });

  it('places a task its holding worker lets go of without loading it (refused): the worker\'s own 404 then', () => {
    const p = new Placement(['b']);
    p.setWorker('b', [], () => true); // its catch-up has not read the database yet: every adapter held
    expect(p.arrive('sql')).toBeUndefined();
    p.setWorker('b', []); // released
    expect(p.homeOf('sql')).toBe('b');
  });

  it('moves an active task past the imbalance bound, only when the move narrows the gap', () => {
    const p = twoWorkers({ slack: 2, ratio: 0 });
    expect(p.arrive('poet')).toBe('a');
    expect(p.arrive('sql')).toBe('b');
    expect(p.arrive('chat')).toBe('a');
    expect(arriveN(p, 'poet', 4)).toEqual(['a', 'a', 'a', 'a']); // past the bound, but hotter than the gap: stays
    expect([p.load('a'), p.load('b')]).toEqual([6, 1]);
    expect(p.arrive('chat')).toBe('b'); // gap 5 > 2 and chat (1 in flight) < 5: chat moves, its waiting request with it
    expect([p.load('a'), p.load('b')]).toEqual([5, 3]);
    expect(p.arrive('poet')).toBe('a'); // gap 2: within the bound
  });

  it('tolerates a larger gap in proportion to load (ratio)', () => {
    const p = twoWorkers({ slack: 0, ratio: 0.5 });
    arriveN(p, 'poet', 4); // a: 4
    arriveN(p, 'sql', 5); // b: 5
    arriveN(p, 'chat', 1); // a: 5
    arriveN(p, 'poet', 2); // a: 7, gap 2 <= 0.5 * 5
    expect(p.homeOf('poet')).toBe('a');
  });

  it('re-homes a leaving worker\'s active tasks, busiest first, and sends new tasks to a joining one', () => {
    const p = twoWorkers();
    arriveN(p, 'sql', 3);
    arriveN(p, 'poet', 2);
    p.removeWorker('a');
    expect(p.homeOf('sql')).toBe('b');
    expect(p.load('b')).toBe(5);
    p.setWorker('a', ['sql', 'poet', 'chat']);
    expect(p.arrive('chat')).toBe('a');
    expect(p.arrive('sql')).toBe('a'); // gap 5-1 > 2 and sql (3) < 4: the joiner takes it over
    expect([p.load('a'), p.load('b')]).toEqual([5, 2]);
  });

  it('forgets idle tasks, leaves them homeless with no worker, places them when one joins', () => {
    const p = twoWorkers();
    p.arrive('sql');
    p.leave('sql');
    expect(p.homeOf('sql')).toBeUndefined();
    expect(p.load('a')).toBe(0);
    p.arrive('poet');
    p.removeWorker('a');
    p.removeWorker('b');
    expect(p.homeOf('poet')).toBeUndefined();
    p.setWorker('c', []);
    expect(p.homeOf('poet')).toBe('c');
    expect(p.load('c')).toBe(1);
    expect(() => p.leave('chat')).toThrow(/no request of task "chat"/);
  });

  it('moves an active task off a worker that stops listing it', () => {
    const p = twoWorkers();
    arriveN(p, 'sql', 2);
    p.setWorker('a', ['poet']);
    expect(p.homeOf('sql')).toBe('b');
    expect([p.load('a'), p.load('b')]).toEqual([0, 2]);
  });

  it('rejects bad options', () => {
    expect(() => new Placement([], { slack: -1, ratio: 0 })).toThrow(/slack/);
    expect(() => new Placement([], { slack: 0, ratio: Number.NaN })).toThrow(/ratio/);
  });
});
