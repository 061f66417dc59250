import { prepareRequest } from '../generation/generation.service';
import { paramOf } from '../testing/invalid-param';
import { parseCompletionRequest } from './request-validation';

describe("completions' add_special_tokens (vLLM's)", () => {
  it('reaches the PrepareRequest when given (true or false)', () => {
    expect(prepareRequest(parseCompletionRequest({ model: 'm', prompt: 'hi', add_special_tokens: true }).input).addSpecialTokens).toBe(true);
    expect(prepareRequest(parseCompletionRequest({ model: 'm', prompt: 'hi', add_special_tokens: false }).input).addSpecialTokens).toBe(false);
  });

  it("is left unset when left out or null (the worker's default for a prompt: true)", () => {
    for (const body of [{ model: 'm', prompt: 'hi' }, { model: 'm', prompt: 'hi', add_special_tokens: null }]) {
      const input = parseCompletionRequest(body).input;
      expect(input.addSpecialTokens).toBeUndefined();
      expect(prepareRequest(input)).not.toHaveProperty('addSpecialTokens');
    }
  });

  it.each([1, 'false', [], {}])('refuses a non-boolean (%p), naming the field', (value) => {
    const call = (): unknown => parseCompletionRequest({ model: 'm', prompt: 'hi', add_special_tokens: value });
    expect(paramOf(call)).toBe('add_special_tokens');
    expect(call).toThrow("'add_special_tokens' must be a boolean.");
  });
});
