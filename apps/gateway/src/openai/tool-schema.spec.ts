import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { callSchema, toolResponseFormat, toolSchema, toolsRefusal } from './tool-schema';
import type { ToolFunction, ToolPlan } from './tools';

const WEATHER: ToolFunction = { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
const TIME: ToolFunction = { name: 'get_time', parameters: { type: 'object', properties: {} } };

function plan(mode: ToolPlan['mode'], extra: Partial<ToolPlan> = {}): ToolPlan {
  return { tools: [WEATHER, TIME], mode, parallel: true, ...extra };
}

describe('toolSchema', () => {
  it('a call is {name: const, arguments: the parameters schema}, both required, nothing else', () => {
    expect(callSchema(WEATHER)).toEqual({
      type: 'object',
      properties: { name: { type: 'string', const: 'get_weather' }, arguments: WEATHER.parameters },
      required: ['name', 'arguments'],
      additionalProperties: false,
    });
  });

  it('named: that one call object', () => {
    expect(toolSchema(plan('named', { named: 'get_time' }))).toEqual(callSchema(TIME));
  });

  it('required: a list of one or more calls of any tool; exactly one without parallel calls', () => {
    expect(toolSchema(plan('required'))).toEqual({ type: 'array', items: { anyOf: [callSchema(WEATHER), callSchema(TIME)] }, minItems: 1 });
    expect(toolSchema(plan('required', { parallel: false, tools: [WEATHER] }))).toEqual({ type: 'array', items: callSchema(WEATHER), minItems: 1, maxItems: 1 });
  });

  it('auto: no constraint', () => {
    expect(toolSchema(plan('auto'))).toBeUndefined();
    expect(toolResponseFormat(plan('auto'))).toBeUndefined();
  });

  it('the constraint is the schema as JSON text, bounded like response_format', () => {
    expect(toolResponseFormat(plan('named', { named: 'get_weather' }))).toEqual({ $case: 'jsonSchema', value: JSON.stringify(callSchema(WEATHER)) });
    const big: ToolFunction = { name: 'big', parameters: { type: 'object', description: 'x'.repeat(40_000) } };
    expect(() => toolResponseFormat({ tools: [big, { ...big, name: 'big2' }], mode: 'required', parallel: true })).toThrow(InlaidError);
  });
});

describe('toolsRefusal', () => {
  const required: ToolPlan = { tools: [WEATHER], mode: 'required', parallel: true };

  it("names 'tools' when the worker refuses the call schema", () => {
    const err = toolsRefusal(new InlaidError(status.INVALID_ARGUMENT, 'response_format: bad pattern', { param: 'response_format' }), required) as InlaidError;
    expect(err.details.param).toBe('tools');
    expect(err.message).toContain('bad pattern');
  });

  it('passes other errors, and auto requests, through', () => {
    const other = InlaidError.modelNotFound('x');
    expect(toolsRefusal(other, required)).toBe(other);
    const rf = new InlaidError(status.INVALID_ARGUMENT, 'response_format: x', { param: 'response_format' });
    expect(toolsRefusal(rf, { ...required, mode: 'auto' })).toBe(rf);
  });
});
