import { status } from '@grpc/grpc-js';
import type { inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { toGenerationInput } from '../grpc-api/generate-request';
import { parseChatRequest, parseCompletionRequest } from './request-validation';
import { MAX_RESPONSE_FORMAT_CHARS } from './response-format';

const SCHEMA = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } }, required: ['name', 'age'] };
const chat = (extra: Record<string, unknown>) => parseChatRequest({ model: 'base', messages: [{ role: 'user', content: 'hi' }], ...extra });

function rejection(fn: () => unknown): InlaidError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InlaidError);
    expect((err as InlaidError).status).toBe(status.INVALID_ARGUMENT);
    return err as InlaidError;
  }
  throw new Error('expected a validation error');
}

describe('response_format (HTTP)', () => {
  it('maps json_schema, json_object and text', () => {
    const rf = { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } };
    expect(chat({ response_format: rf }).input.sampling.responseFormat).toEqual({ $case: 'jsonSchema', value: JSON.stringify(SCHEMA) });
    expect(chat({ response_format: { type: 'json_object' } }).input.sampling.responseFormat).toEqual({ $case: 'jsonObject', value: true });
    expect(chat({ response_format: { type: 'text' } }).input.sampling.responseFormat).toBeUndefined();
    expect(chat({ response_format: null }).input.sampling.responseFormat).toBeUndefined();
    expect(chat({}).input.sampling.responseFormat).toBeUndefined();
  });

  it("maps vLLM's guided_json (object or JSON text), guided_regex and guided_choice, on completions too", () => {
    const base = { model: 'base', prompt: 'x' };
    expect(parseCompletionRequest({ ...base, guided_json: SCHEMA }).input.sampling.responseFormat).toEqual({
      $case: 'jsonSchema',
      value: JSON.stringify(SCHEMA),
    });
    expect(parseCompletionRequest({ ...base, guided_json: JSON.stringify(SCHEMA) }).input.sampling.responseFormat?.$case).toBe('jsonSchema');
    expect(parseCompletionRequest({ ...base, guided_regex: '[0-9]+' }).input.sampling.responseFormat).toEqual({ $case: 'regex', value: '[0-9]+' });
    expect(parseCompletionRequest({ ...base, guided_choice: ['yes', 'no'] }).input.sampling.responseFormat).toEqual({
      $case: 'choice',
      value: { values: ['yes', 'no'] },
    });
    expect(parseCompletionRequest({ ...base, response_format: { type: 'json_object' } }).input.sampling.responseFormat?.$case).toBe('jsonObject');
  });

  it.each([
    [{ response_format: 'json' }, 'response_format'],
    [{ response_format: { type: 'yaml' } }, 'response_format'],
    [{ response_format: { type: 'json_schema' } }, 'response_format'],
    [{ response_format: { type: 'json_schema', json_schema: { schema: SCHEMA } } }, 'response_format'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'bad name!', schema: SCHEMA } } }, 'response_format'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'p', schema: [1] } } }, 'response_format'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'p', schema: SCHEMA, strict: 'yes' } } }, 'response_format'],
    [{ guided_json: '{not json' }, 'guided_json'],
    [{ guided_json: 3 }, 'guided_json'],
    [{ guided_regex: '' }, 'guided_regex'],
    [{ guided_choice: [] }, 'guided_choice'],
    [{ guided_choice: ['a', ''] }, 'guided_choice'],
    [{ guided_choice: 'a' }, 'guided_choice'],
    [{ response_format: { type: 'json_object' }, guided_regex: 'a+' }, 'guided_regex'],
    [{ guided_json: SCHEMA, guided_choice: ['a'] }, 'guided_choice'],
  ])('refuses %j naming %s', (extra, param) => {
    expect(rejection(() => chat(extra)).details.param).toBe(param);
  });

  it('bounds the size of a schema, a regex and the choices', () => {
    const big = { type: 'object', description: 'x'.repeat(MAX_RESPONSE_FORMAT_CHARS) };
    const err = rejection(() => chat({ response_format: { type: 'json_schema', json_schema: { name: 'p', schema: big } } }));
    expect(err.message).toContain(`at most ${MAX_RESPONSE_FORMAT_CHARS}`);
    expect(rejection(() => chat({ guided_regex: 'a'.repeat(MAX_RESPONSE_FORMAT_CHARS + 1) })).details.param).toBe('guided_regex');
    expect(rejection(() => chat({ guided_choice: Array.from({ length: 1025 }, (_, i) => `c${i}`) })).details.param).toBe('guided_choice');
  });
});

describe('sampling.response_format (gRPC)', () => {
  const req = (responseFormat: unknown): inference.GenerateRequest =>
    ({
      model: 'base',
      prompt: 'x',
      messages: [],
      requestId: '',
      sampling: { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false, responseFormat },
    }) as inference.GenerateRequest;

  it('passes a valid oneof through', () => {
    for (const rf of [
      { $case: 'jsonSchema', value: JSON.stringify(SCHEMA) },
      { $case: 'jsonObject', value: true },
      { $case: 'regex', value: 'a+' },
      { $case: 'choice', value: { values: ['a', 'b'] } },
    ]) {
      expect(toGenerationInput(req(rf)).sampling.responseFormat).toEqual(rf);
    }
  });

  it.each([
    [{ $case: 'jsonSchema', value: '{oops' }, 'sampling.json_schema'],
    [{ $case: 'jsonSchema', value: '[]' }, 'sampling.json_schema'],
    [{ $case: 'jsonObject', value: false }, 'sampling.json_object'],
    [{ $case: 'regex', value: '' }, 'sampling.regex'],
    [{ $case: 'choice', value: { values: [] } }, 'sampling.choice'],
  ])('refuses %j naming %s and response_format', (rf, param) => {
    const err = rejection(() => toGenerationInput(req(rf)));
    expect(err.details.param).toBe(param);
    expect(err.message).toContain('response_format');
  });
});
