/**
 * Structured outputs: OpenAI's `response_format` ({type: text | json_object | json_schema}) and vLLM's
 * `guided_json` / `guided_regex` / `guided_choice`, validated into SamplingParams.responseFormat (a oneof the
 * worker compiles with xgrammar in Prepare: a schema or regex it cannot compile is refused there, also 400
 * naming response_format). Here: the shapes, at most one kind per request, and the size bounds.
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { isObject, isPresent } from './body-fields';
import { checkDepth } from './json-depth';

/** A schema (as JSON text), a regex, or all choices together; the worker has the same bound (MAX_SPEC_CHARS). */
export const MAX_RESPONSE_FORMAT_CHARS = 65536;
/** Strings of one guided_choice / choice (the worker's MAX_CHOICES). */
export const MAX_GUIDED_CHOICES = 1024;

export type ResponseFormat = common.SamplingParams['responseFormat'];

type Body = Record<string, unknown>;

function checkSize(chars: number, param: string): void {
  if (chars > MAX_RESPONSE_FORMAT_CHARS) {
    throw InlaidError.invalid(`'${param}' has ${chars} characters; at most ${MAX_RESPONSE_FORMAT_CHARS} are accepted.`, param);
  }
}

function schemaText(schema: unknown, param: string): string {
  let value = schema;
  if (typeof schema === 'string') {
    try {
      value = JSON.parse(schema);
    } catch {
      throw InlaidError.invalid(`'${param}' must be a JSON Schema object (the string is not valid JSON).`, param);
    }
  }
  if (!isObject(value)) throw InlaidError.invalid(`'${param}' must be a JSON Schema object.`, param);
  checkDepth(value, param);
  const text = JSON.stringify(value);
  checkSize(text.length, param);
  return text;
}

function regexText(regex: unknown, param: string): string {
  if (typeof regex !== 'string' || regex === '') throw InlaidError.invalid(`'${param}' must be a non-empty string.`, param);
  checkSize(regex.length, param);
  return regex;
}

function choiceList(choices: unknown, param: string): string[] {
  if (!Array.isArray(choices) || choices.length === 0 || choices.some((c) => typeof c !== 'string' || c === '')) {
    throw InlaidError.invalid(`'${param}' must be a non-empty list of non-empty strings.`, param);
  }
  if (choices.length > MAX_GUIDED_CHOICES) throw InlaidError.invalid(`'${param}' accepts at most ${MAX_GUIDED_CHOICES} strings.`, param);
  checkSize((choices as string[]).reduce((n, c) => n + c.length, 0), param);
  return choices as string[];
}

/** OpenAI's response_format; undefined for absent / null / {type: "text"}. */
function openAIFormat(body: Body): ResponseFormat {
  const rf = body['response_format'];
  if (!isPresent(rf)) return undefined;
  if (!isObject(rf)) throw InlaidError.invalid("'response_format' must be an object with a 'type'.", 'response_format');
  const type = rf['type'];
  if (type === 'text') return undefined;
  if (type === 'json_object') return { $case: 'jsonObject', value: true };
  if (type === 'json_schema') {
    const js = rf['json_schema'];
    if (!isObject(js)) {
      throw InlaidError.invalid("'response_format.json_schema' must be an object with 'name' and 'schema'.", 'response_format');
    }
    const name = js['name'];
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw InlaidError.invalid("'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-'.", 'response_format');
    }
    if (isPresent(js['strict']) && typeof js['strict'] !== 'boolean') {
      throw InlaidError.invalid("'response_format.json_schema.strict' must be a boolean.", 'response_format');
    }
    if (!isObject(js['schema'])) throw InlaidError.invalid("'response_format.json_schema.schema' must be a JSON Schema object.", 'response_format');
    return { $case: 'jsonSchema', value: schemaText(js['schema'], 'response_format') };
  }
  throw InlaidError.invalid("'response_format.type' must be one of text, json_object, json_schema.", 'response_format');
}

/**
 * The request's structured-output constraint: response_format, or one of vLLM's guided_json (object or JSON
 * text), guided_regex, guided_choice. More than one is refused, naming the second.
 */
export function parseResponseFormat(body: Body): ResponseFormat {
  const found: { param: string; format: ResponseFormat }[] = [];
  const rf = openAIFormat(body);
  if (rf !== undefined) found.push({ param: 'response_format', format: rf });
  if (isPresent(body['guided_json'])) {
    found.push({ param: 'guided_json', format: { $case: 'jsonSchema', value: schemaText(body['guided_json'], 'guided_json') } });
  }
  if (isPresent(body['guided_regex'])) {
    found.push({ param: 'guided_regex', format: { $case: 'regex', value: regexText(body['guided_regex'], 'guided_regex') } });
  }
  if (isPresent(body['guided_choice'])) {
    found.push({ param: 'guided_choice', format: { $case: 'choice', value: { values: choiceList(body['guided_choice'], 'guided_choice') } } });
  }
  if (found.length > 1) {
    throw InlaidError.invalid(
      `Only one of response_format (json_object / json_schema), guided_json, guided_regex and guided_choice may be set; got ${found.map((f) => f.param).join(' and ')}.`,
      found[1].param,
    );
  }
  return found[0]?.format;
}

/** gRPC: sampling.response_format (json_schema | json_object | regex | choice), the same bounds. */
export function checkResponseFormat(rf: ResponseFormat): void {
  try {
    checkOneof(rf);
  } catch (err) {
    if (err instanceof InlaidError) throw InlaidError.invalid(`sampling.response_format: ${err.message}`, err.details.param);
    throw err;
  }
}

function checkOneof(rf: ResponseFormat): void {
  if (rf === undefined) return;
  switch (rf.$case) {
    case 'jsonSchema':
      schemaText(rf.value, 'sampling.json_schema');
      return;
    case 'jsonObject':
      if (!rf.value) throw InlaidError.invalid("'sampling.json_object' must be true when set.", 'sampling.json_object');
      return;
    case 'regex':
      regexText(rf.value, 'sampling.regex');
      return;
    case 'choice':
      choiceList(rf.value.values, 'sampling.choice');
      return;
  }
}
