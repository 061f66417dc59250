/**
 * SamplingParams.keepToolMarkers (tool-schema.ts keepsToolMarkers): set for `tool_choice: "auto"` with the mistral
 * or pythonic format only, on HTTP chat and gRPC Generate alike; with the markers in the text, calls written after
 * prose are found (json-calls.ts), whole, split at every boundary and one character at a time.
 */
import type { common } from '@inlaid/proto';
import { withGrpcTools } from '../grpc-api/generate-tools';
import { JsonCallParser, MISTRAL, PYTHONIC, type JsonCallsFormat } from './json-calls';
import { parseChatRequest } from './request-validation';
import type { ToolEvent } from './tool-events';
import { HERMES_FALLBACK, type ToolSupport } from './tool-format';
import { toolMessage as message } from '../testing/tool-message';

const NAMES = new Set(['get_weather', 'get_time']);
const PARIS = { name: 'get_weather', arguments: '{"city":"Paris"}' };
const TIME_CALL = { name: 'get_time', arguments: '{}' };

const native = (parser: ToolSupport['parser']): ToolSupport => ({ parser, native: true });

const BODY = {
  model: 'm',
  messages: [{ role: 'user', content: 'Weather?' }],
  tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
};

function httpKeeps(support: ToolSupport, toolChoice?: unknown): boolean | undefined {
  const body = toolChoice === undefined ? BODY : { ...BODY, tool_choice: toolChoice };
  return parseChatRequest(body, () => support).input.sampling.keepToolMarkers;
}

function grpcKeeps(support: ToolSupport, choice: string): boolean | undefined {
  const messages = [{ role: 'user', content: 'x' }];
  const tools = { functions: [{ name: 'get_time', description: '', parameters: '' }], choice, function: '', parallelToolCalls: true };
  const sampling = { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false } as common.SamplingParams;
  return withGrpcTools({ model: 'm', prompt: '', messages, tools } as never, { model: 'm', prompt: '', messages, sampling, api: 'grpc' }, () => support).input.sampling
    .keepToolMarkers;
}

describe('keepToolMarkers', () => {
  it.each([
    ['mistral', native('mistral'), true],
    ['pythonic', native('pythonic'), true],
    ['llama3_json', native('llama3_json'), undefined],
    ['hermes (native)', native('hermes'), undefined],
    ['the Hermes fallback', HERMES_FALLBACK, undefined],
  ])('auto with %s', (_label, support, keeps) => {
    expect(httpKeeps(support)).toBe(keeps);
    expect(httpKeeps(support, 'auto')).toBe(keeps);
    expect(grpcKeeps(support, 'auto')).toBe(keeps);
  });

  it.each([['mistral'], ['pythonic']] as const)('required, named and none with %s: not set', (parser) => {
    expect(httpKeeps(native(parser), 'required')).toBeUndefined();
    expect(httpKeeps(native(parser), { type: 'function', function: { name: 'get_weather' } })).toBeUndefined();
    expect(httpKeeps(native(parser), 'none')).toBeUndefined();
    expect(grpcKeeps(native(parser), 'required')).toBeUndefined();
  });
});


function run(format: JsonCallsFormat, pieces: string[]): ToolEvent[] {
  let n = 0;
  const p = new JsonCallParser(format, NAMES, () => `call_${n++}`);
  return [...pieces.flatMap((piece) => p.push(piece)), ...p.finish()];
}

/** The whole text's message, checked equal to the one of every split in two and of single characters. */
function sameAtEveryCut(format: JsonCallsFormat, text: string): ReturnType<typeof message> {
  const whole = message(run(format, [text]));
  for (let i = 0; i <= text.length; i++) expect(message(run(format, [text.slice(0, i), text.slice(i)]))).toEqual(whole);
  expect(message(run(format, [...text]))).toEqual(whole);
  return whole;
}

describe('calls after prose, the markers kept', () => {
  it.each([
    ['mistral list', MISTRAL, 'Let me check. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', [PARIS]],
    ['mistral name[ARGS]', MISTRAL, 'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}', [PARIS, TIME_CALL]],
    ['pythonic', PYTHONIC, 'Let me check.\n<|python_start|>[get_weather(city="Paris"), get_time()]<|python_end|>', [PARIS, TIME_CALL]],
  ])('%s: the prose is content, the calls are calls', (_label, format, text, calls) => {
    expect(sameAtEveryCut(format, text)).toEqual({ content: 'Let me check.', calls });
  });

  it('without a call after it, a marker stays in the content as written', () => {
    const text = 'Let me check.<|python_start|>[see the appendix]';
    expect(sameAtEveryCut(PYTHONIC, text)).toEqual({ content: text, calls: [] });
  });
});
