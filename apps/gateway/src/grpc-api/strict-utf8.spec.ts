/**
 * String fields of a client gRPC request that are not valid UTF-8 are refused with INVALID_ARGUMENT naming the field
 * (before: decoded to U+FFFD and served). A real grpc-js server with the gateway's service wrapping and handlers, and a
 * real grpc-js client sending crafted bytes through a raw serializer; the gate and the generation service are stubs.
 */
import { credentials, Metadata, Server, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { makeGenericClientConstructor } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { common, inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { Generation, GenerationInput } from '../generation/generation.types';
import type { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { withMalformedMarker } from './malformed';
import { fieldHolding } from './strict-utf8';
import { bindLocal } from '../testing/local-grpc';
import { startOnly } from '../testing/start-only';

const INVALID = Buffer.from([0x68, 0xff, 0x69]); // "h", a byte that is never UTF-8, "i"
const SURROGATE = Buffer.from([0x61, 0xed, 0xa0, 0x80]); // "a" + U+D800 encoded as if it were a scalar value (CESU-8)
const OVERLONG = Buffer.from([0xc0, 0xaf]); // "/" in two bytes

/** Field `field` (wire type 2) with raw `bytes`; appended to a message it overrides a scalar or adds to a repeated field. */
const raw = (field: number, bytes: Uint8Array): Buffer => Buffer.from(new BinaryWriter().uint32((field << 3) | 2).bytes(bytes).finish());

const SAMPLING: common.SamplingParams = { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false };
const generateBytes = (req: Partial<inference.GenerateRequest>, ...extra: Buffer[]): Buffer =>
  Buffer.concat([Buffer.from(inference.GenerateRequest.encode({ model: 'sql', prompt: '', messages: [], requestId: '', sampling: SAMPLING, ...req }).finish()), ...extra]);

describe('gRPC requests with string fields that are not UTF-8', () => {
  let server: Server;
  let client: Client;
  const starts: GenerationInput[] = [];
  const tokenized: string[] = [];

  beforeAll(async () => {
    const start = (input: GenerationInput): Promise<Generation> => {
      starts.push(input);
      async function* deltas() {
        yield { text: 'ok', tokenIds: [1], finishReason: 'stop' as const, promptTokens: 1, completionTokens: 1 };
      }
      return Promise.resolve({ id: 'g', model: input.model, promptTokens: 1, created: 1, deltas: deltas(), abort: () => undefined });
    };
    const rpc = {
      tokenize: (req: { prompt: string }, _md: unknown, _opts: unknown, cb: (err: null, res: common.TokenizeResponse) => void) => {
        tokenized.push(req.prompt);
        cb(null, { tokenIds: [1], maxModelLen: 8, tokenStrs: [] });
        return { cancel: () => undefined };
      },
    };
    const workers = { maxModelLen: () => undefined, toolSupport: () => undefined, pick: () => ({ rpc }) } as unknown as WorkersService;
    const gate = { admit: () => Promise.resolve(() => undefined) } as unknown as CallGate;
    server = new Server();
    server.addService(withMalformedMarker(inference.InferenceService), inferenceHandlers(startOnly(start), workers, gate));
    const port = await bindLocal(server);
    // a client that sends the bytes it is given as the request message
    const Raw = makeGenericClientConstructor({}, 'Raw');
    client = new Raw(`127.0.0.1:${port}`, credentials.createInsecure());
  });

  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  const identity = (b: Buffer): Buffer => b;

  /** Generate with these request bytes: the status it ends with and the messages before it. */
  function generate(bytes: Buffer): Promise<{ err: ServiceError | null; messages: inference.GenerateResponse[] }> {
    const messages: inference.GenerateResponse[] = [];
    return new Promise((resolve) => {
      const call = client.makeServerStreamRequest('/inlaid.v1.Inference/Generate', identity, inference.GenerateResponse.decode, bytes, new Metadata());
      call.on('data', (m: inference.GenerateResponse) => messages.push(m));
      call.on('error', (err: ServiceError) => resolve({ err, messages }));
      call.on('end', () => resolve({ err: null, messages }));
    });
  }

  function tokenize(bytes: Buffer): Promise<ServiceError | null> {
    return new Promise((resolve) => {
      client.makeUnaryRequest('/inlaid.v1.Inference/Tokenize', identity, common.TokenizeResponse.decode, bytes, new Metadata(), (err) => resolve(err ?? null));
    });
  }

  const refusal = (err: ServiceError | null) => ({ code: err?.code, details: err?.details, param: err?.metadata.get('x-inlaid-param') });

  it.each([
    ['prompt', generateBytes({}, raw(2, INVALID))],
    ['model', generateBytes({ prompt: 'hi' }, raw(1, INVALID))],
    ['request_id', generateBytes({ prompt: 'hi' }, raw(5, INVALID))],
    ['messages[1].content', generateBytes({ messages: [{ role: 'user', content: 'hi' }] }, raw(3, Buffer.concat([raw(1, Buffer.from('user')), raw(2, INVALID)])))],
    ['sampling.stop[1]', generateBytes({ prompt: 'hi', sampling: undefined }, raw(4, Buffer.concat([Buffer.from(common.SamplingParams.encode({ ...SAMPLING, stop: ['ok'] }).finish()), raw(6, INVALID)])))],
    ['sampling.regex', generateBytes({ prompt: 'hi' }, raw(4, raw(15, INVALID)))],
    ['tools.functions[0].parameters', generateBytes({ messages: [{ role: 'user', content: 'hi' }] }, raw(7, raw(1, Buffer.concat([raw(1, Buffer.from('f')), raw(3, INVALID)]))))],
    ['prompt', generateBytes({}, raw(2, SURROGATE))],
    ['prompt', generateBytes({}, raw(2, OVERLONG))],
  ])('Generate: %s refused with INVALID_ARGUMENT naming it, nothing started', async (field, bytes) => {
    const before = starts.length;
    const { err, messages } = await generate(bytes);
    // before: served, the bad bytes read as U+FFFD
    expect(refusal(err)).toEqual({ code: status.INVALID_ARGUMENT, details: `${field} must be valid UTF-8.`, param: [field] });
    expect(messages).toEqual([]);
    expect(starts.length).toBe(before);
  });

  it('names the field that held the bytes, not an earlier one holding the U+FFFD they would have decoded to', async () => {
    const bytes = generateBytes({ messages: [{ role: 'user', content: '\uFFFD' }] }, raw(3, Buffer.concat([raw(1, Buffer.from('user')), raw(2, Buffer.from([0xff]))])));
    // before: messages[0].content (the lenient decoding of [0xff] equals the valid U+FFFD the client sent there)
    expect(refusal((await generate(bytes)).err)).toEqual({ code: status.INVALID_ARGUMENT, details: 'messages[1].content must be valid UTF-8.', param: ['messages[1].content'] });
  });

  it('bytes a later occurrence of their field replaced are still refused, naming no field', async () => {
    const before = starts.length;
    const { err } = await generate(Buffer.concat([raw(1, INVALID), generateBytes({ prompt: 'hi' })])); // model, then model again
    // before: x-inlaid-param `a string field`, which is no field
    expect(refusal(err)).toEqual({ code: status.INVALID_ARGUMENT, details: 'A string field must be valid UTF-8.', param: [] });
    expect(starts.length).toBe(before);
  });

  it('Tokenize: the prompt refused naming it, the worker not asked', async () => {
    const bytes = Buffer.concat([Buffer.from(inference.TokenizeTextRequest.encode({ model: 'sql', prompt: '', messages: [], returnTokenStrs: false }).finish()), raw(2, INVALID)]);
    expect(refusal(await tokenize(bytes))).toEqual({ code: status.INVALID_ARGUMENT, details: 'prompt must be valid UTF-8.', param: ['prompt'] });
    expect(tokenized).toEqual([]);
  });

  it('valid UTF-8 of every width (and a U+FFFD the client sent) is served exactly as sent', async () => {
    const prompt = 'héllo ✓ 😀 \uFFFD end';
    const { err, messages } = await generate(generateBytes({ prompt, requestId: 'r-1', sampling: { ...SAMPLING, stop: ['✓'] } }));
    expect(err).toBeNull();
    expect(messages.map((m) => m.text)).toEqual(['ok']);
    const input = starts.at(-1);
    expect(input?.prompt).toBe(prompt);
    expect(input?.sampling.stop).toEqual(['✓']);
    expect(await tokenize(Buffer.from(inference.TokenizeTextRequest.encode({ model: 'sql', prompt, messages: [], returnTokenStrs: false }).finish()))).toBeNull();
    expect(tokenized.at(-1)).toBe(prompt);
  });

  it('a message that is not protobuf at all is still INVALID_ARGUMENT (not INTERNAL)', async () => {
    const { err } = await generate(Buffer.from([0x0a, 0x05, 0x61]));
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/^The request message could not be decoded: /);
  });
});

describe('fieldHolding', () => {
  it('names the proto path: snake_case keys, list indices, a oneof by its set field', () => {
    const msg = { model: 'm', sampling: { stopTokenIds: [1], responseFormat: { $case: 'jsonSchema', value: 'x\uFFFD' } }, messages: [{ role: 'user', content: 'a' }] };
    expect(fieldHolding(msg, 'x\uFFFD')).toBe('sampling.json_schema');
    expect(fieldHolding(msg, 'a')).toBe('messages[0].content');
    expect(fieldHolding(msg, 'nowhere')).toBeUndefined();
  });
});
