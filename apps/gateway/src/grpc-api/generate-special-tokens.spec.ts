/**
 * gRPC Generate's add_special_tokens (vLLM's, as HTTP chat completions takes it) reaches the worker's PrepareRequest
 * of every choice, with messages (tools too) or a prompt; unset stays unset (the worker's default: false for messages,
 * true for a prompt).
 */
import { inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import { prepareRequest } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import { parseChatRequest } from '../openai/request-validation';
import { HERMES_FALLBACK } from '../openai/tool-format';
import type { WorkersService } from '../workers/workers.service';
import { toGenerationInput } from './generate-request';
import { inferenceHandlers } from './inference-handlers';
import { generateCall } from '../testing/generate-call';
import { startOnly } from '../testing/start-only';

const MESSAGES = [{ role: 'user', content: 'hi' }];
const TOOLS: inference.Tools = { functions: [{ name: 'get_weather', description: '', parameters: '' }], choice: '', function: '' };

/** The inputs the handler starts generations with, for a request sent through inferenceHandlers' Generate. */
async function startedInputs(req: inference.GenerateRequest): Promise<GenerationInput[]> {
  const seen: GenerationInput[] = [];
  const start = (input: GenerationInput): Promise<Generation> => {
    seen.push(input);
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      yield { text: 'x', tokenIds: [7], finishReason: 'length', promptTokens: 4, completionTokens: 1 };
    }
    return Promise.resolve({ id: 'g', model: req.model, promptTokens: 4, created: 1, deltas: deltas(), abort: () => undefined });
  };
  const gate = { admit: jest.fn().mockResolvedValue(() => undefined) } as unknown as CallGate;
  const workers = { toolSupport: () => HERMES_FALLBACK, maxModelLen: () => undefined } as unknown as WorkersService;
  const handlers = inferenceHandlers(startOnly(start), workers, gate);
  const { done, stream } = generateCall(req);
  handlers.generate(stream);
  expect(await done).toBeNull();
  return seen;
}

const chat = (r: Partial<inference.GenerateRequest>): inference.GenerateRequest => ({ model: 'sql', prompt: '', messages: MESSAGES, requestId: '', ...r });

describe("gRPC Generate's add_special_tokens", () => {
  it.each([true, false])('reaches the PrepareRequest of every choice with messages (%p), tools included', async (add) => {
    const inputs = await startedInputs(chat({ addSpecialTokens: add, n: 2, tools: TOOLS }));
    expect(inputs).toHaveLength(2);
    for (const input of inputs) {
      expect(prepareRequest(input).addSpecialTokens).toBe(add);
      expect(prepareRequest(input).messages.map((m) => m.content).join('')).toContain('get_weather');
    }
  });

  it('is left unset when unset (the worker applies vLLM\'s default), as HTTP chat completions leaves it', async () => {
    const [input] = await startedInputs(chat({}));
    expect(prepareRequest(input as GenerationInput)).not.toHaveProperty('addSpecialTokens');
    const http = parseChatRequest({ model: 'sql', messages: MESSAGES }).input;
    expect(prepareRequest(input as GenerationInput)).toEqual(prepareRequest({ ...http, api: 'grpc' }));
  });

  it('gives the PrepareRequest HTTP chat completions gives for the same messages and value', () => {
    for (const add of [true, false]) {
      const grpc = prepareRequest(toGenerationInput(chat({ addSpecialTokens: add })));
      const http = prepareRequest(parseChatRequest({ model: 'sql', messages: MESSAGES, add_special_tokens: add }).input);
      expect(grpc).toEqual(http);
    }
  });

  it('passes with a prompt too (the worker\'s default there: true)', () => {
    const req: inference.GenerateRequest = { model: 'sql', prompt: 'hi', messages: [], requestId: '', addSpecialTokens: false };
    expect(prepareRequest(toGenerationInput(req)).addSpecialTokens).toBe(false);
    expect(prepareRequest(toGenerationInput({ ...req, addSpecialTokens: undefined }))).not.toHaveProperty('addSpecialTokens');
  });

  it('survives the wire: encoded and decoded as set, or absent', () => {
    const set = inference.GenerateRequest.decode(inference.GenerateRequest.encode(chat({ addSpecialTokens: false })).finish());
    expect(set.addSpecialTokens).toBe(false);
    const unset = inference.GenerateRequest.decode(inference.GenerateRequest.encode(chat({})).finish());
    expect(unset.addSpecialTokens).toBeUndefined();
  });
});
