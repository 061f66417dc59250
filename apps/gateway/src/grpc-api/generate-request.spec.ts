import { InlaidError } from '../common/inlaid-error';
import { toGenerationInput } from './generate-request';

const base = { model: 'sql', prompt: 'hi', messages: [], sampling: undefined, requestId: '' };

describe('toGenerationInput', () => {
  it('fills default sampling and leaves the id to the server', () => {
    const input = toGenerationInput(base);
    expect(input.requestId).toBeUndefined();
    expect(input.sampling).toEqual({ maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false });
    expect(input.api).toBe('grpc');
  });

  it.each([
    [{ ...base, model: '' }, 'model'],
    [{ ...base, prompt: '' }, 'prompt'],
    [{ ...base, messages: [{ role: 'user', content: 'x' }] }, 'prompt'],
    [{ ...base, requestId: 'has space' }, 'request_id'],
    [{ ...base, sampling: { maxTokens: 1, temperature: 5, stop: [], stopTokenIds: [], ignoreEos: false } }, 'sampling.temperature'],
  ])('rejects %j naming %s', (req, param) => {
    try {
      toGenerationInput(req);
      throw new Error('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(InlaidError);
      expect((err as InlaidError).details.param).toBe(param);
    }
  });
});
