/** gRPC Inference Tokenize / Detokenize into the worker's requests (tokenize-request.ts). */
import { status } from '@grpc/grpc-js';
import type { inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { parseTokenizeRequest } from '../openai/tokenize-request';
import { HERMES_FALLBACK } from '../openai/tool-format';
import { paramOf } from '../testing/invalid-param';
import { toGenerationInput } from './generate-request';
import { withGrpcTools } from './generate-tools';
import { checkDetokenizeRequest, grpcTokenizeRefusal, workerTokenizeRequest } from './tokenize-request';

const hermes = () => HERMES_FALLBACK;
const req = (r: Partial<inference.TokenizeTextRequest>): inference.TokenizeTextRequest => ({ model: '', prompt: '', messages: [], returnTokenStrs: false, ...r });

describe('workerTokenizeRequest', () => {
  it('a prompt passes with its options and the resolved model', () => {
    expect(workerTokenizeRequest(req({ prompt: 'hi', addSpecialTokens: false, returnTokenStrs: true }), 'base', hermes)).toEqual({
      model: 'base', prompt: 'hi', messages: [], tools: '', addGenerationPrompt: undefined, addSpecialTokens: false, returnTokenStrs: true,
    });
  });

  it('renders tools into the messages as HTTP /tokenize does (Hermes)', () => {
    const messages = [{ role: 'user', content: 'Weather?' }];
    const params = { type: 'object', properties: { city: { type: 'string' } } };
    const tools = { functions: [{ name: 'get_weather', description: 'd', parameters: JSON.stringify(params) }], choice: '', function: '' };
    const grpc = workerTokenizeRequest(req({ messages, tools, addGenerationPrompt: false }), 'base', hermes);
    const http = parseTokenizeRequest({ model: 'base', messages, tools: [{ type: 'function', function: { name: 'get_weather', description: 'd', parameters: params } }] }, hermes);
    expect(grpc.messages).toEqual(http.messages);
    expect(grpc.messages[0]?.content).toContain('get_weather');
    expect(grpc.addGenerationPrompt).toBe(false);
  });

  it('passes add_special_tokens for messages too (unset: the worker applies vLLM\'s default, false there)', () => {
    const messages = [{ role: 'user', content: 'hi' }];
    expect(workerTokenizeRequest(req({ messages, addSpecialTokens: true }), 'base', hermes).addSpecialTokens).toBe(true);
    expect(workerTokenizeRequest(req({ messages }), 'base', hermes).addSpecialTokens).toBeUndefined();
  });

  it('tools with no functions, or a choice without tools, are refused as Generate refuses them (either template)', () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const cases: inference.Tools[] = [
      { functions: [], choice: '', function: '' },
      { functions: [], choice: 'auto', function: '' },
      { functions: [{ name: 'f', description: '', parameters: '' }], choice: '', function: 'g' },
    ];
    for (const support of [hermes, () => ({ parser: 'hermes' as const, native: true })]) {
      for (const tools of cases) {
        const generate: inference.GenerateRequest = { model: 'base', prompt: '', messages, requestId: '', tools };
        const viaGenerate = paramOf(() => withGrpcTools(generate, toGenerationInput(generate), support));
        expect(paramOf(() => workerTokenizeRequest(req({ messages, tools }), 'base', support))).toBe(viaGenerate);
        expect(viaGenerate).toMatch(/^tools\./);
      }
    }
  });

  it('refuses neither or both of prompt and messages, and tools on a prompt', () => {
    expect(paramOf(() => workerTokenizeRequest(req({}), 'base', hermes))).toBe('prompt');
    expect(paramOf(() => workerTokenizeRequest(req({ prompt: 'x', messages: [{ role: 'user', content: 'y' }] }), 'base', hermes))).toBe('prompt');
    const tools = { functions: [{ name: 'f', description: '', parameters: '' }], choice: '', function: '' };
    expect(paramOf(() => workerTokenizeRequest(req({ prompt: 'x', tools }), 'base', hermes))).toBe('tools');
  });
});

describe('Detokenize', () => {
  it('bounds the ids and names token_ids in the worker refusal', () => {
    expect(checkDetokenizeRequest({ model: '', tokenIds: [1, 2] })).toEqual({ model: '', tokenIds: [1, 2] });
    expect(paramOf(() => checkDetokenizeRequest({ model: '', tokenIds: new Array<number>(256 * 1024 + 1).fill(0) }))).toBe('token_ids');
    const mapped = grpcTokenizeRefusal(new InlaidError(status.INVALID_ARGUMENT, 'tokens: token id 9 is outside', { param: 'tokens' })) as InlaidError;
    expect(mapped.details.param).toBe('token_ids');
    const other = new InlaidError(status.NOT_FOUND, 'x', { param: 'model' });
    expect(grpcTokenizeRefusal(other)).toBe(other);
  });
});

describe('workerTokenizeRequest developer turns', () => {
  it('tokenizes a developer turn as system, as REST /tokenize and Generate render it (with tools too)', () => {
    const messages = [{ role: 'developer', content: 'be brief' }, { role: 'user', content: 'Weather?' }];
    expect(workerTokenizeRequest(req({ messages }), 'base', hermes).messages.map((m) => m.role)).toEqual(['system', 'user']);
    const tools = { functions: [{ name: 'get_weather', description: 'd', parameters: '{"type":"object"}' }], choice: '', function: '' };
    const grpc = workerTokenizeRequest(req({ messages, tools }), 'base', hermes);
    const http = parseTokenizeRequest({ model: 'base', messages, tools: [{ type: 'function', function: { name: 'get_weather', description: 'd', parameters: { type: 'object' } } }] }, hermes);
    expect(grpc.messages).toEqual(http.messages);
    expect(grpc.messages.map((m) => m.role)).toEqual(['system', 'user']); // the tools joined the developer's system turn
  });
});
