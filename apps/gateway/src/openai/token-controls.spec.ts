import { status } from '@grpc/grpc-js';
import { fromWorkerError, InlaidError } from '../common/inlaid-error';
import { toOpenAIError } from '../common/http-mapping';
import { workerRefusal } from '../testing/worker-refusal';
import { toGenerationInput } from '../grpc-api/generate-request';
import { parseChatRequest, parseCompletionRequest } from './request-validation';

function refusal(fn: () => unknown): { param: string | undefined; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InlaidError);
    expect((err as InlaidError).status).toBe(status.INVALID_ARGUMENT);
    return { param: (err as InlaidError).details.param, message: (err as InlaidError).message };
  }
  throw new Error('expected a validation error');
}

const manyBiases = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), -1]));

describe('logit_bias, min_p and min_tokens over HTTP', () => {
  it('map onto the sampling params (completions and chat)', () => {
    const c = parseCompletionRequest({
      model: 'm', prompt: 'x', max_tokens: 8, logit_bias: { '50256': -100, '7': 2.5 }, min_p: 0.05, min_tokens: 3,
    });
    expect(c.input.sampling).toMatchObject({ logitBias: { bias: { 50256: -100, 7: 2.5 } }, minP: 0.05, minTokens: 3 });
    const chat = parseChatRequest({
      model: 'm', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 4, logit_bias: { '0': 100 }, min_tokens: 4,
    });
    expect(chat.input.sampling).toMatchObject({ logitBias: { bias: { 0: 100 } }, minTokens: 4, maxTokens: 4 });
  });

  it('leave the fields unset when absent, null, empty or off', () => {
    for (const extra of [{}, { logit_bias: null, min_p: null, min_tokens: null }, { logit_bias: {}, min_p: 0, min_tokens: 0 }]) {
      const s = parseCompletionRequest({ model: 'm', prompt: 'x', ...extra }).input.sampling;
      expect([s.logitBias, s.minP, s.minTokens]).toEqual([undefined, undefined, undefined]);
    }
  });

  it('accept the bounds: 300 entries, biases of +-100, min_p 1, min_tokens equal to max_tokens or without one', () => {
    const s = parseCompletionRequest({
      model: 'm', prompt: 'x', logit_bias: { ...manyBiases(298), '298': 100, '299': -100 }, min_p: 1, min_tokens: 32_768,
    }).input.sampling;
    expect(Object.keys(s.logitBias?.bias ?? {})).toHaveLength(300);
    expect(s.minP).toBe(1);
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', max_tokens: 5, min_tokens: 5 }).input.sampling.minTokens).toBe(5);
  });

  it.each([
    [{ logit_bias: [1, 2] }, 'logit_bias'],
    [{ logit_bias: 'x' }, 'logit_bias'],
    [{ logit_bias: { abc: 1 } }, 'logit_bias'],
    [{ logit_bias: { '-1': 1 } }, 'logit_bias'],
    [{ logit_bias: { '1.5': 1 } }, 'logit_bias'],
    [{ logit_bias: { '01': 1 } }, 'logit_bias'],
    [{ logit_bias: { '4294967296': 1 } }, 'logit_bias'],
    [{ logit_bias: { '5': 100.5 } }, 'logit_bias'],
    [{ logit_bias: { '5': -101 } }, 'logit_bias'],
    [{ logit_bias: { '5': '1' } }, 'logit_bias'],
    [{ logit_bias: { '5': null } }, 'logit_bias'],
    [{ logit_bias: manyBiases(301) }, 'logit_bias'],
    [{ min_p: -0.1 }, 'min_p'],
    [{ min_p: 1.01 }, 'min_p'],
    [{ min_p: '0.1' }, 'min_p'],
    [{ min_tokens: -1 }, 'min_tokens'],
    [{ min_tokens: 1.5 }, 'min_tokens'],
    [{ min_tokens: 40_000 }, 'min_tokens'],
    [{ max_tokens: 4, min_tokens: 5 }, 'min_tokens'],
  ])('refuse %j naming %s', (extra, param) => {
    expect(refusal(() => parseCompletionRequest({ model: 'm', prompt: 'x', ...extra })).param).toBe(param);
  });

  it("name the chat request's max_completion_tokens when min_tokens exceeds it", () => {
    const r = refusal(() =>
      parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 2, min_tokens: 3 }),
    );
    expect(r.param).toBe('min_tokens');
    expect(r.message).toContain("'max_completion_tokens' (2)");
  });

  it("turn a worker's refusal of an id outside the vocabulary into a 400 naming logit_bias", () => {
    const err = fromWorkerError(
      workerRefusal(status.INVALID_ARGUMENT, 'logit_bias: token id 60000 is outside the vocabulary (size 49152)', 'REQUEST_ERROR_KIND_BAD_INPUT'),
      'm',
    );
    const body = toOpenAIError(err);
    expect(body.httpStatus).toBe(400);
    expect(body.body.error.param).toBe('logit_bias');
    expect(body.body.error.message).toContain('token id 60000');
  });
});

describe('logit_bias, min_p and min_tokens over gRPC', () => {
  const base = { model: 'm', prompt: 'hi', messages: [], requestId: '' };
  const plain = { maxTokens: 8, stop: [], stopTokenIds: [], ignoreEos: false };

  it('pass through when in range', () => {
    const sampling = { ...plain, logitBias: { bias: { 3: -100, 9: 100 } }, minP: 0.2, minTokens: 8 };
    expect(toGenerationInput({ ...base, sampling }).sampling).toEqual(sampling);
    expect(toGenerationInput({ ...base, sampling: { ...plain, maxTokens: 0, minTokens: 100 } }).sampling.minTokens).toBe(100);
  });

  it.each([
    [{ logitBias: { bias: { 3: 101 } } }, 'sampling.logit_bias'],
    [{ logitBias: { bias: { 3: NaN } } }, 'sampling.logit_bias'],
    [{ logitBias: { bias: Object.fromEntries(Array.from({ length: 301 }, (_, i) => [i, 1])) } }, 'sampling.logit_bias'],
    [{ minP: 1.5 }, 'sampling.min_p'],
    [{ minP: -0.5 }, 'sampling.min_p'],
    [{ minP: NaN }, 'sampling.min_p'],
    [{ minTokens: 9 }, 'sampling.min_tokens'],
    [{ maxTokens: 0, minTokens: 40_000 }, 'sampling.min_tokens'],
  ])('refuse %p with INVALID_ARGUMENT naming %s', (extra, param) => {
    expect(refusal(() => toGenerationInput({ ...base, sampling: { ...plain, ...extra } })).param).toBe(param);
  });
});
