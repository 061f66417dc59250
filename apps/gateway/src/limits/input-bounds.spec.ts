import { paramOf } from '../testing/invalid-param';
import { BOUNDS, checkModelId, checkStops, validateTaskName } from './input-bounds';

describe('input bounds', () => {
  it.each(['sql', 'poet-2', 'a_b', '0x'])('accepts task name %p', (name) => {
    expect(validateTaskName(name)).toBe(name);
  });

  it.each(['', 'A', '../etc', 'a/b', 'a.b', '-a', 'a b', 'x'.repeat(64), "a';drop table tasks;--", 5, null])('refuses task name %p', (name) => {
    expect(paramOf(() => validateTaskName(name))).toBe('name');
  });

  it('bounds model ids', () => {
    expect(() => checkModelId('HuggingFaceTB/SmolLM2-135M-Instruct')).not.toThrow();
    expect(paramOf(() => checkModelId('x'.repeat(BOUNDS.modelChars + 1)))).toBe('model');
    expect(paramOf(() => checkModelId('a b'))).toBe('model');
    expect(paramOf(() => checkModelId('\u0000'))).toBe('model');
  });

  it('bounds stop lists and stop token ids', () => {
    expect(() => checkStops(['a', 'b'], [1, 2], 'stop')).not.toThrow();
    expect(paramOf(() => checkStops(['a', 'b', 'c', 'd', 'e'], [], 'stop'))).toBe('stop');
    expect(paramOf(() => checkStops(['x'.repeat(BOUNDS.stopChars + 1)], [], 'stop'))).toBe('stop');
    expect(paramOf(() => checkStops([], new Array(BOUNDS.stopTokenIds + 1).fill(1), 'stop'))).toBe('stop_token_ids');
    expect(paramOf(() => checkStops([], [2 ** 40], 'stop'))).toBe('stop_token_ids');
  });
});
