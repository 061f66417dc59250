/** /tokenize and /detokenize bodies (tokenize-request.ts), the response shape and the worker-error mapping. */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { paramOf } from '../testing/invalid-param';
import { workerRefusal } from '../testing/worker-refusal';
import { parseChatRequest } from './request-validation';
import { parseDetokenizeRequest, parseTokenizeRequest, tokenizeResponse } from './tokenize-request';
import { tokenizeError } from './tokenizer-calls';
import { HERMES_FALLBACK, type ToolSupport } from './tool-format';

const hermes = (): ToolSupport => HERMES_FALLBACK;
const native = (): ToolSupport => ({ parser: 'llama3_json', native: true });
const USER = [{ role: 'user', content: 'Weather in Oslo?' }];
const TOOLS = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];

describe('parseTokenizeRequest', () => {
  it('a prompt: its options go to the worker; the model may be left out', () => {
    expect(parseTokenizeRequest({ model: 'm', prompt: 'hi', add_special_tokens: false, return_token_strs: true }, hermes)).toEqual({
      model: 'm', prompt: 'hi', messages: [], tools: '', addSpecialTokens: false, returnTokenStrs: true,
    });
    expect(parseTokenizeRequest({ prompt: 'hi' }, hermes)).toMatchObject({ model: '', addSpecialTokens: undefined, returnTokenStrs: false });
  });

  it('messages are rendered exactly as chat completions renders them, tools included (Hermes and native)', () => {
    for (const support of [hermes, native]) {
      const body = { model: 'm', messages: USER, tools: TOOLS, tool_choice: 'auto' };
      const chat = parseChatRequest({ ...body }, support);
      const req = parseTokenizeRequest({ ...body, add_generation_prompt: false }, support);
      expect(req.messages).toEqual(chat.input.messages);
      expect(req.tools).toBe(chat.input.tools ?? '');
      expect(req.addGenerationPrompt).toBe(false);
      expect(req.prompt).toBe('');
    }
    expect(parseTokenizeRequest({ model: 'm', messages: USER, tools: TOOLS }, hermes).messages[0]?.content).toContain('<tools>');
    expect(parseTokenizeRequest({ model: 'm', messages: USER, tools: TOOLS }, native).tools).toContain('get_weather');
  });

  it("add_special_tokens goes to the worker for messages too (left out: vLLM's default there, false)", () => {
    expect(parseTokenizeRequest({ model: 'm', messages: USER, add_special_tokens: true }, hermes).addSpecialTokens).toBe(true);
    expect(parseTokenizeRequest({ model: 'm', messages: USER, add_special_tokens: false }, native).addSpecialTokens).toBe(false);
    expect(parseTokenizeRequest({ model: 'm', messages: USER }, hermes).addSpecialTokens).toBeUndefined();
  });

  it.each([
    ['tools: []', { tools: [] }],
    ['tools not a list', { tools: 'get_weather' }],
    ['tool_choice without tools', { tool_choice: 'auto' }],
    ['tool_choice naming another function', { tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }],
    ['a bad parameters schema', { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }] }],
  ])('%s: refused exactly as chat completions refuses it, on either kind of template', (_name, extra) => {
    for (const support of [hermes, native]) {
      const body = { model: 'm', messages: USER, ...extra };
      expect(paramOf(() => parseTokenizeRequest(body, support))).toBe(paramOf(() => parseChatRequest(body, support)));
    }
  });

  it('tool_choice none with tools offers none, as chat completions', () => {
    for (const support of [hermes, native]) {
      const body = { model: 'm', messages: USER, tools: TOOLS, tool_choice: 'none' };
      const req = parseTokenizeRequest(body, support);
      expect([req.messages, req.tools]).toEqual([parseChatRequest(body, support).input.messages, '']);
    }
  });

  it.each([
    [{ model: 'm' }, 'prompt'],
    [{ model: 'm', prompt: 'x', messages: USER }, 'prompt'],
    [{ model: 'm', prompt: '' }, 'prompt'],
    [{ model: 'm', prompt: 3 }, 'prompt'],
    [{ model: 'm', prompt: 'x'.repeat(256 * 1024 + 1) }, 'prompt'],
    [{ model: '', prompt: 'x' }, 'model'],
    [{ model: 'a b', prompt: 'x' }, 'model'],
    [{ model: 'm', prompt: 'x', return_token_strs: 'yes' }, 'return_token_strs'],
    [{ model: 'm', prompt: 'x', add_special_tokens: 1 }, 'add_special_tokens'],
    [{ model: 'm', messages: [] }, 'messages'],
    [{ model: 'm', messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
    [{ model: 'm', messages: USER, add_generation_prompt: 'no' }, 'add_generation_prompt'],
    [{ model: 'm', messages: USER, continue_final_message: true }, 'continue_final_message'],
    [{ model: 'm', messages: USER, chat_template: '{{ x }}' }, 'chat_template'],
    [{ model: 'm', messages: USER, tool_choice: 'required' }, 'tool_choice'],
    [{ model: 'm', prompt: 'x', tools: TOOLS }, 'tools'],
    [{ model: 'm', prompt: 'x', tools: [] }, 'tools'],
    [{ model: 'm', prompt: 'x', tool_choice: 'none' }, 'tool_choice'],
    [{ model: 'm', messages: USER, add_special_tokens: 'yes' }, 'add_special_tokens'],
  ])('refuses %j naming %s', (body, param) => {
    expect(paramOf(() => parseTokenizeRequest(body, hermes))).toBe(param);
  });

  it('refuses a body that is not an object', () => {
    expect(paramOf(() => parseTokenizeRequest([1], hermes))).toBe('<none>');
  });
});

describe('parseDetokenizeRequest', () => {
  it('takes token ids', () => {
    expect(parseDetokenizeRequest({ model: 'm', tokens: [0, 5, 4294967295] })).toEqual({ model: 'm', tokenIds: [0, 5, 4294967295] });
    expect(parseDetokenizeRequest({ tokens: [] })).toEqual({ model: '', tokenIds: [] });
  });

  it.each([[{ model: 'm' }], [{ model: 'm', tokens: [-1] }], [{ model: 'm', tokens: [1.5] }], [{ model: 'm', tokens: ['1'] }], [{ model: 'm', tokens: [2 ** 32] }], [{ model: 'm', tokens: 3 }]])(
    'refuses %j naming tokens',
    (body) => {
      expect(paramOf(() => parseDetokenizeRequest(body))).toBe('tokens');
    },
  );
});

describe('tokenize responses and errors', () => {
  it("vLLM's shape, token_strs only when asked", () => {
    const res = { tokenIds: [3, 4], maxModelLen: 2048, tokenStrs: ['a', 'b'] };
    expect(tokenizeResponse(res, false)).toEqual({ count: 2, max_model_len: 2048, tokens: [3, 4] });
    expect(tokenizeResponse(res, true)).toEqual({ count: 2, max_model_len: 2048, tokens: [3, 4], token_strs: ['a', 'b'] });
  });

  it('maps worker refusals: NOT_FOUND to model_not_found, ids outside the vocabulary to a 400 naming tokens', () => {
    const notFound = tokenizeError(workerRefusal(status.NOT_FOUND, 'unknown model x', 'REQUEST_ERROR_KIND_UNKNOWN_MODEL'), 'x');
    expect(notFound.details).toMatchObject({ code: 'model_not_found', param: 'model' });
    const bad = (text: string) => workerRefusal(status.INVALID_ARGUMENT, text, 'REQUEST_ERROR_KIND_BAD_INPUT');
    const vocab = tokenizeError(bad('tokens: token id 99999 is outside the vocabulary (0..49151)'), 'm');
    expect(vocab).toBeInstanceOf(InlaidError);
    expect([vocab.status, vocab.details.param]).toEqual([status.INVALID_ARGUMENT, 'tokens']);
    expect(tokenizeError(bad('the prompt is empty'), 'm').details.param).toBeUndefined();
  });
});
