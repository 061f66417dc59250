import type { Response } from 'express';
import { InlaidError } from '../common/inlaid-error';
import type { WorkersService } from '../workers/workers.service';
import { CompletionsController } from './completions.controller';
import type { OpenAIResponder } from './openai-responder';

/** The model-length lookup behind the held-logprobs cap: asked only when needed, and never a 503 of its own. */
describe('CompletionsController model length lookup', () => {
  const setup = (listModels: () => unknown[]) => {
    const respond = jest.fn().mockResolvedValue(undefined);
    const workers = { listModels: jest.fn(listModels), toolSupport: () => ({}) };
    const c = new CompletionsController({ respond } as unknown as OpenAIResponder, workers as unknown as WorkersService);
    return { c, respond, workers };
  };
  const res = {} as Response;

  it('does not list the models for a request without logprobs', async () => {
    const { c, respond, workers } = setup(() => []);
    await c.completions({ model: 'm', prompt: 'x' }, res);
    await c.completions({ model: 'm', prompt: 'x', logprobs: 5, max_tokens: 8 }, res);
    expect(workers.listModels).not.toHaveBeenCalled();
    expect(respond).toHaveBeenCalledTimes(2);
  });

  it('uses the served length when it must, and passes the request on when no worker is ready', async () => {
    const long = setup(() => [{ id: 'm', maxModelLen: 131_072 }]);
    await expect(long.c.completions({ model: 'm', prompt: 'x', logprobs: 20 }, res)).rejects.toThrow(/131071 max tokens/);
    const none = setup(() => {
      throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    });
    await none.c.completions({ model: 'm', prompt: 'x', logprobs: 5 }, res); // counted at BOUNDS.maxTokens: 197k
    expect(none.respond).toHaveBeenCalledTimes(1);
    expect(none.workers.listModels).toHaveBeenCalledTimes(1);
  });
});
