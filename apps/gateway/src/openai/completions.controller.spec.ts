import type { Response } from 'express';
import type { WorkersService } from '../workers/workers.service';
import { CompletionsController } from './completions.controller';
import type { OpenAIResponder } from './openai-responder';

/** The model-length lookup behind the held-logprobs cap: asked only when needed, and never a 503 of its own. */
describe('CompletionsController model length lookup', () => {
  const setup = (maxModelLen: (model: string) => number | undefined) => {
    const respond = jest.fn().mockResolvedValue(undefined);
    const workers = { maxModelLen: jest.fn(maxModelLen), toolSupport: () => ({}) };
    const c = new CompletionsController({ respond } as unknown as OpenAIResponder, workers as unknown as WorkersService);
    return { c, respond, workers };
  };
  const res = {} as Response;

  it('does not look the length up for a request without logprobs or with max_tokens', async () => {
    const { c, respond, workers } = setup(() => 8192);
    await c.completions({ model: 'm', prompt: 'x' }, res);
    await c.completions({ model: 'm', prompt: 'x', logprobs: 5, max_tokens: 8 }, res);
    expect(workers.maxModelLen).not.toHaveBeenCalled();
    expect(respond).toHaveBeenCalledTimes(2);
  });

  it('uses the served length when it must, and passes the request on when no worker is ready', async () => {
    const long = setup(() => 131_072);
    await expect(long.c.completions({ model: 'm', prompt: 'x', logprobs: 20 }, res)).rejects.toThrow(/131071 max tokens/);
    expect(long.workers.maxModelLen).toHaveBeenCalledWith('m');
    const none = setup(() => undefined); // no ready worker serves it
    await none.c.completions({ model: 'm', prompt: 'x', logprobs: 5 }, res); // counted at BOUNDS.maxTokens: 197k
    expect(none.respond).toHaveBeenCalledTimes(1);
    expect(none.workers.maxModelLen).toHaveBeenCalledTimes(1);
  });
});
