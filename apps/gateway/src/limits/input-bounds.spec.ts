import { paramOf } from '../testing/invalid-param';
import { BOUNDS, checkLogprobEntries, checkModelId, checkStops, checkWellFormed } from './input-bounds';

describe('input bounds', () => {
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
    expect(paramOf(() => checkStops(['ok', '\ud800'], [], 'sampling.stop'))).toBe('sampling.stop');
  });

  it('bounds the logprob entries a non-streamed response holds at choices x tokens x (top + 1)', () => {
    expect(() => checkLogprobEntries(1, BOUNDS.maxTokens, 20, 'logprobs')).not.toThrow(); // 688,128
    expect(() => checkLogprobEntries(4, 11_904, 20, 'logprobs')).not.toThrow(); // 999,936
    expect(paramOf(() => checkLogprobEntries(4, 11_905, 20, 'logprobs'))).toBe('logprobs'); // 1,000,020
    expect(paramOf(() => checkLogprobEntries(16, 8192, 20, 'top_logprobs'))).toBe('top_logprobs');
  });

  it('refuses lone surrogates, not surrogate pairs', () => {
    expect(() => checkWellFormed('plain \ud83d\ude00 text', 'prompt')).not.toThrow();
    for (const bad of ['\ud800', 'a\udc00', '\ude00\ud83d', 'x\ud83d']) expect(paramOf(() => checkWellFormed(bad, 'prompt'))).toBe('prompt');
  });
});
