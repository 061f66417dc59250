import { InlaidError } from '../common/inlaid-error';
import { checkJsonSchema, MAX_SCHEMA_DEPTH } from './json-schema-check';

function refusal(schema: Record<string, unknown>): string | undefined {
  try {
    checkJsonSchema(schema, 'tools[0].function.parameters');
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(InlaidError);
    expect((err as InlaidError).details.param).toBe('tools[0].function.parameters');
    return (err as InlaidError).message;
  }
}

describe('checkJsonSchema', () => {
  it('accepts ordinary tool schemas, a property named "type" and booleans where schemas may be', () => {
    expect(
      refusal({
        type: 'object',
        properties: {
          type: { type: 'string', enum: ['a', 'b'] },
          tags: { type: 'array', items: { type: ['string', 'null'] } },
          pair: { type: 'array', prefixItems: [{ type: 'integer' }, true] },
          any: { anyOf: [{ type: 'number' }, { $ref: '#/$defs/x' }] },
        },
        required: ['type'],
        additionalProperties: false,
        $defs: { x: { type: 'boolean' } },
        default: { type: 'not a schema position' },
      }),
    ).toBeUndefined();
  });

  it.each([
    [{ type: 'object', properties: { city: { type: 'frobnicate' } } }, 'parameters.properties.city.type'],
    [{ type: 'object', properties: { city: 'string' } }, 'parameters.properties.city must be a schema object'],
    [{ type: 'object', properties: [] }, 'parameters.properties must map'],
    [{ type: 'object', required: 'city' }, 'parameters.required'],
    [{ type: 'object', properties: { u: { enum: [] } } }, 'parameters.properties.u.enum'],
    [{ type: 'object', properties: { l: { type: 'array', items: { type: 7 } } } }, 'parameters.properties.l.items.type'],
    [{ type: 'object', anyOf: {} }, 'parameters.anyOf'],
    [{ type: [] }, 'parameters.type'],
  ])('%j is refused at %s', (schema, where) => {
    expect(refusal(schema)).toContain(where);
  });

  it('refuses nesting deeper than the bound', () => {
    let schema: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i <= MAX_SCHEMA_DEPTH; i++) schema = { type: 'array', items: schema };
    expect(refusal(schema)).toContain('deeper');
  });
});
