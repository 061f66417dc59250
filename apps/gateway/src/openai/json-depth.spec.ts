/**
 * Deeply nested JSON (10,000 levels, ~20 KB) at every entry point that walks or re-serializes a client's JSON:
 * a 400 naming the field, never V8's RangeError (an HTTP 500). JSON.parse itself takes any depth.
 */
import type { inference } from '@inlaid/proto';
import { toGenerationInput } from '../grpc-api/generate-request';
import { deeperThan, MAX_JSON_DEPTH } from './json-depth';
import { parseHermesCall } from './hermes-calls';
import { parseChatRequest, parseCompletionRequest } from './request-validation';
import { parseToolPlan } from './tools';
import { paramOf } from '../testing/invalid-param';

const LEVELS = 10_000;
const DEEP_TEXT = '['.repeat(LEVELS) + ']'.repeat(LEVELS);
const DEEP = JSON.parse(DEEP_TEXT) as unknown;
const USER = [{ role: 'user', content: 'hi' }];

const tool = (fn: Record<string, unknown>) => ({ type: 'function', function: { name: 'f', ...fn } });

describe('deeperThan', () => {
  it('counts array and object levels; scalars are depth 0', () => {
    expect(deeperThan('x', 0)).toBe(false);
    expect(deeperThan([], 0)).toBe(true);
    expect(deeperThan([], 1)).toBe(false);
    expect(deeperThan({ a: [{ b: 1 }] }, 3)).toBe(false);
    expect(deeperThan({ a: [{ b: 1 }] }, 2)).toBe(true);
    expect(deeperThan({ a: 1, b: [2, [3]], c: { d: {} } }, 3)).toBe(false);
    expect(deeperThan({ a: 1, b: [2, [3]], c: { d: { e: [] } } }, 3)).toBe(true);
  });

  it('walks any depth without recursion', () => {
    expect(deeperThan(DEEP, MAX_JSON_DEPTH)).toBe(true);
    expect(deeperThan(DEEP, LEVELS)).toBe(false);
  });
});

describe('10,000 nested levels get 400, not a RangeError', () => {
  it.each([
    ['parameters.default', tool({ parameters: { type: 'object', default: DEEP } }), 'tools[0].function.parameters'],
    ['properties.a.enum', tool({ parameters: { type: 'object', properties: { a: { enum: [DEEP] } } } }), 'tools[0].function.parameters'],
    ['a type list', tool({ parameters: { type: 'object', properties: { a: { type: DEEP } } } }), 'tools[0].function.parameters'],
    ['a field beside parameters', tool({ extra: DEEP }), 'tools[0]'],
  ])('tools: %s', (_, t, param) => {
    expect(paramOf(() => parseToolPlan({ tools: [t] }))).toBe(param);
  });

  it("an assistant message's tool_calls[].function.arguments", () => {
    const messages = [
      ...USER,
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: DEEP_TEXT } }] },
    ];
    expect(paramOf(() => parseChatRequest({ model: 'm', messages }))).toBe('messages[1].tool_calls[0].function.arguments');
  });

  it('response_format json_schema, guided_json (object and text)', () => {
    const rf = { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'object', default: DEEP } } };
    expect(paramOf(() => parseChatRequest({ model: 'm', messages: USER, response_format: rf }))).toBe('response_format');
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', guided_json: { type: 'object', default: DEEP } }))).toBe('guided_json');
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', guided_json: `{"default": ${DEEP_TEXT}}` }))).toBe('guided_json');
  });

  it('gRPC sampling.json_schema', () => {
    const req = {
      model: 'm', prompt: 'x', messages: [], requestId: '',
      sampling: { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false, responseFormat: { $case: 'jsonSchema', value: `{"default": ${DEEP_TEXT}}` } },
    } as inference.GenerateRequest;
    expect(paramOf(() => toGenerationInput(req))).toBe('sampling.json_schema');
  });

  it('a number field given a nested list names the field', () => {
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', min_p: DEEP }))).toBe('min_p');
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', min_tokens: DEEP }))).toBe('min_tokens');
  });

  it("a model's <tool_call> block nested that deep is not a call (it stays content)", () => {
    expect(parseHermesCall(`{"name": "f", "arguments": {"a": ${DEEP_TEXT}}}`, new Set(['f']))).toBeUndefined();
  });
});
