/** /v1/completions refuses chat-only tool calling fields (vLLM ignores them, so the model never saw the tools). */
import { toOpenAIError } from '../common/http-mapping';
import { InlaidError } from '../common/inlaid-error';
import { parseChatRequest, parseCompletionRequest } from './request-validation';

const TOOLS = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }];

function refusal(body: object): ReturnType<typeof toOpenAIError> {
  try {
    parseCompletionRequest({ model: 'm', prompt: 'hi', ...body });
  } catch (err) {
    if (err instanceof InlaidError) return toOpenAIError(err);
    throw err;
  }
  throw new Error('accepted');
}

describe('/v1/completions with tool calling fields', () => {
  it.each([
    ['tools', { tools: TOOLS }],
    ['tools', { tools: [] }],
    ['tools', { tools: TOOLS, tool_choice: 'auto' }],
    ['tool_choice', { tool_choice: 'none' }],
    ['tool_choice', { tool_choice: { type: 'function', function: { name: 'get_weather' } } }],
    ['parallel_tool_calls', { parallel_tool_calls: false }],
  ])('is a 400 invalid_request_error naming %s, pointing to chat completions', (param, body) => {
    const { httpStatus, body: error } = refusal(body);
    expect(httpStatus).toBe(400);
    expect(error.error).toMatchObject({ type: 'invalid_request_error', param });
    expect(error.error.message).toBe(`'${param}' is not supported on /v1/completions: tool calling needs chat messages; use /v1/chat/completions.`);
  });

  it('takes null as left out, and chat completions still takes tools', () => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'hi', tools: null, tool_choice: null, parallel_tool_calls: null }).input.prompt).toBe('hi');
    const chat = parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'Weather?' }], tools: TOOLS });
    expect(chat.input.messages.map((m) => m.content).join('')).toContain('get_weather');
  });
});
