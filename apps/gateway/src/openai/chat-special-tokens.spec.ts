import { prepareRequest } from '../generation/generation.service';
import { paramOf } from '../testing/invalid-param';
import { parseChatRequest } from './request-validation';

const USER = [{ role: 'user', content: 'hi' }];

describe("chat completions' add_special_tokens (vLLM's)", () => {
  it('reaches the PrepareRequest when given (true or false)', () => {
    expect(prepareRequest(parseChatRequest({ model: 'm', messages: USER, add_special_tokens: true }).input).addSpecialTokens).toBe(true);
    expect(prepareRequest(parseChatRequest({ model: 'm', messages: USER, add_special_tokens: false }).input).addSpecialTokens).toBe(false);
  });

  it("is left unset when left out (the worker's default for messages: false)", () => {
    const input = parseChatRequest({ model: 'm', messages: USER }).input;
    expect(input.addSpecialTokens).toBeUndefined();
    expect(prepareRequest(input)).not.toHaveProperty('addSpecialTokens');
    expect(prepareRequest(input)).toEqual({ model: 'm', prompt: '', messages: input.messages, sampling: input.sampling, tools: '' });
  });

  it.each([1, 'true', [], {}])('refuses a non-boolean (%p), naming the field', (value) => {
    const call = (): unknown => parseChatRequest({ model: 'm', messages: USER, add_special_tokens: value });
    expect(paramOf(call)).toBe('add_special_tokens');
    expect(call).toThrow("'add_special_tokens' must be a boolean.");
  });

  it('treats null as left out', () => {
    expect(parseChatRequest({ model: 'm', messages: USER, add_special_tokens: null }).input.addSpecialTokens).toBeUndefined();
  });
});
