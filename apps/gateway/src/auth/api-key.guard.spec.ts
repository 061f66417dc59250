import type { ExecutionContext } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import { InlaidError } from '../common/inlaid-error';
import { ApiKeyGuard, requestCost } from './api-key.guard';
import type { CallGate } from './call-gate.service';

const post = (path: string, body: unknown) => ({ method: 'POST', path, body });

describe('requestCost', () => {
  it("counts a generation request's n", () => {
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x', n: 16 }))).toBe(16);
    expect(requestCost(post('/v1/chat/completions', { model: 'm', messages: [], n: 3 }))).toBe(3);
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x' }))).toBe(1);
  });

  it('counts 1 for an invalid n (validation refuses it later) and for other routes', () => {
    for (const n of [0, 17, 2.5, '4', null, -1]) expect(requestCost(post('/v1/completions', { n }))).toBe(1);
    expect(requestCost(post('/v1/completions', undefined))).toBe(1);
    expect(requestCost(post('/v1/completions', [{ n: 4 }]))).toBe(1);
    expect(requestCost({ method: 'GET', path: '/v1/models', body: { n: 4 } })).toBe(1);
    expect(requestCost(post('/v1/tasks', { n: 4 }))).toBe(1);
  });

  it('counts best_of candidates when more than n (an invalid best_of counts 1)', () => {
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x', n: 2, best_of: 5 }))).toBe(5);
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x', best_of: 3 }))).toBe(3);
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x', n: 4, best_of: 2 }))).toBe(4);
    expect(requestCost(post('/v1/completions', { model: 'm', prompt: 'x', n: 2, best_of: 99 }))).toBe(2);
  });

  it('counts n on the paths Express also routes there (trailing slash, any case)', () => {
    expect(requestCost(post('/v1/completions/', { n: 16 }))).toBe(16);
    expect(requestCost(post('/V1/Chat/Completions', { n: 8 }))).toBe(8);
  });
});

describe('ApiKeyGuard', () => {
  function context(req: object, res: EventEmitter): ExecutionContext {
    return { switchToHttp: () => ({ getRequest: () => req, getResponse: () => res }) } as unknown as ExecutionContext;
  }

  it('admits n times and frees the slots when the response closes', async () => {
    const release = jest.fn();
    const admit = jest.fn().mockResolvedValue(release);
    const res = new EventEmitter();
    const req = { ...post('/v1/completions', { n: 5 }), headers: { authorization: 'Bearer k' } };
    await expect(new ApiKeyGuard({ admit } as unknown as CallGate).canActivate(context(req, res))).resolves.toBe(true);
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 5);
    expect(release).not.toHaveBeenCalled();
    res.emit('close');
    expect(release).toHaveBeenCalledTimes(1);
  });

  it("passes the limiter's refusal on (429 with Retry-After through the error filter)", async () => {
    const refusal = InlaidError.rateLimited('Rate limit reached', 12);
    const admit = jest.fn().mockRejectedValue(refusal);
    const req = { ...post('/v1/chat/completions', { n: 16 }), headers: {} };
    await expect(new ApiKeyGuard({ admit } as unknown as CallGate).canActivate(context(req, new EventEmitter()))).rejects.toBe(refusal);
    expect(admit).toHaveBeenCalledWith(undefined, 'inference', 16);
  });

  it('needs the inference scope on a path in another case (Express routes it to the same handler)', async () => {
    const admit = jest.fn().mockResolvedValue(jest.fn());
    const req = { ...post('/V1/COMPLETIONS', { n: 2 }), headers: { authorization: 'Bearer k' } };
    await new ApiKeyGuard({ admit } as unknown as CallGate).canActivate(context(req, new EventEmitter()));
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 2);
  });

  it('frees the slots at once when the client left while the key was being checked', async () => {
    const release = jest.fn();
    const res = Object.assign(new EventEmitter(), { closed: false });
    const admit = jest.fn().mockImplementation(async () => {
      res.closed = true; // the client disconnects during authentication / the Redis round trip
      res.emit('close');
      return release;
    });
    const req = { ...post('/v1/completions', { n: 4 }), headers: { authorization: 'Bearer k' } };
    await new ApiKeyGuard({ admit } as unknown as CallGate).canActivate(context(req, res));
    expect(release).toHaveBeenCalledTimes(1);
  });
});
