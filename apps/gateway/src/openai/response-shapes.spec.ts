import { cachedTokensOf, charCount, chatResponse, completionResponse, jsonLogprob, MIN_JSON_LOGPROB, usageOf } from './response-shapes';

const meta = { id: 'x-1', created: 1700000000, model: 'sql' };

describe('usage', () => {
  it("carries prompt_tokens_details.cached_tokens, OpenAI's and vLLM's shape", () => {
    expect(usageOf(40, 5, 32)).toEqual({ prompt_tokens: 40, completion_tokens: 5, total_tokens: 45, prompt_tokens_details: { cached_tokens: 32 } });
    expect(usageOf(40, 5).prompt_tokens_details).toEqual({ cached_tokens: 0 });
    expect(completionResponse(meta, [], usageOf(8, 1, 0)).usage.prompt_tokens_details.cached_tokens).toBe(0);
    expect(chatResponse(meta, [], usageOf(48, 1, 32)).usage.prompt_tokens_details.cached_tokens).toBe(32);
  });

  it('counts the cached tokens of the one prompt for n choices: the fewest, never more than prompt_tokens', () => {
    expect(cachedTokensOf([32], 40)).toBe(32);
    expect(cachedTokensOf([0, 32, 32], 40)).toBe(0); // choice 0 computed the prompt the others reused
    expect(cachedTokensOf([32, 48], 60)).toBe(32);
    expect(cachedTokensOf([64, 64], 40)).toBe(40);
    expect(cachedTokensOf([], 40)).toBe(0);
  });
});

describe('charCount / jsonLogprob (shared with prompt-logprobs.ts)', () => {
  it('counts code points and clamps logprobs JSON cannot carry', () => {
    expect(charCount('a\u{1F600}é')).toBe(3);
    expect(jsonLogprob(-Infinity)).toBe(MIN_JSON_LOGPROB);
    expect(jsonLogprob(-0.5)).toBe(-0.5);
  });
});
