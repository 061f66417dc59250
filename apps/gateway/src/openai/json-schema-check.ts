/**
 * A structural check of a tool's parameters schema at the edge (pure), so `auto` requests, whose schemas the
 * worker never compiles, refuse the same mistakes: every `type` must be a JSON Schema type name (or a list
 * of them) and every subschema must be an object (or a boolean where JSON Schema allows one). The worker's
 * compile (xgrammar) still has the last word for `required` and named calls.
 */
import { InlaidError } from '../common/inlaid-error';
import { isObject } from './body-fields';

const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
/** Keywords whose value is one subschema. */
const ONE = ['additionalProperties', 'items', 'not', 'if', 'then', 'else', 'contains', 'propertyNames', 'additionalItems', 'unevaluatedItems', 'unevaluatedProperties'];
/** Keywords whose value is a list of subschemas. */
const LIST = ['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items'];
/** Keywords whose value maps names to subschemas. */
const MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas'];
/** Nesting bound: a deeper schema is refused rather than walked (the JSON as a whole is bounded first: json-depth.ts). */
export const MAX_SCHEMA_DEPTH = 64;

function fail(param: string, path: string, why: string): never {
  throw InlaidError.invalid(`'${param}' is not a valid JSON Schema: ${path} ${why}.`, param);
}

function checkNode(node: unknown, param: string, path: string, depth: number): void {
  if (typeof node === 'boolean') return;
  if (!isObject(node)) fail(param, path, 'must be a schema object');
  if (depth > MAX_SCHEMA_DEPTH) fail(param, path, `nests deeper than ${MAX_SCHEMA_DEPTH} levels`);
  const type = node['type'];
  if (type !== undefined) {
    const types = Array.isArray(type) ? type : [type];
    if (types.length === 0 || types.some((t) => typeof t !== 'string' || !TYPES.has(t))) {
      fail(param, `${path}.type`, `must be one of ${[...TYPES].join(', ')} (or a list of them), got ${JSON.stringify(type)}`);
    }
  }
  if (node['required'] !== undefined && (!Array.isArray(node['required']) || node['required'].some((r) => typeof r !== 'string'))) {
    fail(param, `${path}.required`, 'must be a list of property names');
  }
  if (node['enum'] !== undefined && (!Array.isArray(node['enum']) || node['enum'].length === 0)) fail(param, `${path}.enum`, 'must be a non-empty list');
  for (const k of ONE) if (node[k] !== undefined && !(k === 'items' && Array.isArray(node[k]))) checkNode(node[k], param, `${path}.${k}`, depth + 1);
  for (const k of LIST) {
    const list = node[k];
    if (list === undefined || (k === 'items' && !Array.isArray(list))) continue;
    if (!Array.isArray(list)) fail(param, `${path}.${k}`, 'must be a list of schemas');
    list.forEach((s, i) => checkNode(s, param, `${path}.${k}[${i}]`, depth + 1));
  }
  for (const k of MAP) {
    const map = node[k];
    if (map === undefined) continue;
    if (!isObject(map)) fail(param, `${path}.${k}`, 'must map names to schemas');
    for (const [name, s] of Object.entries(map)) checkNode(s, param, `${path}.${k}.${name}`, depth + 1);
  }
}

/** Throws 400 naming `param` when `schema` is not a structurally valid JSON Schema. */
export function checkJsonSchema(schema: Record<string, unknown>, param: string): void {
  checkNode(schema, param, 'parameters', 0);
}
