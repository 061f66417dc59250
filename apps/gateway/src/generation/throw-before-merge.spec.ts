/**
 * A throw after the choices started but before their merge ran (mergeChoices frees them itself once it runs) must not
 * leave them running and their id held: the gRPC Generate handler (a GrpcToolStream that cannot be built) and the
 * OpenAI responder (a response whose headers cannot be sent) abort the choices, which frees the id. The real
 * GenerationService; its worker and scheduler are stubs whose requests run until cancelled.
 */
import type { inference } from '@inlaid/proto';
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import type { CallGate } from '../auth/call-gate.service';
import * as generateTools from '../grpc-api/generate-tools';
import { inferenceHandlers } from '../grpc-api/inference-handlers';
import { HERMES_FALLBACK } from '../openai/tool-format';
import { OpenAIResponder } from '../openai/openai-responder';
import type { RecordsService } from '../records/records.service';
import type { SchedulingService } from '../scheduling/scheduling.service';
import { generateCall } from '../testing/generate-call';
import { logSpies } from '../testing/log-spies';
import { AsyncQueue } from '../workers/async-queue';
import type { WorkersService } from '../workers/workers.service';
import { GenerationService } from './generation.service';
import type { GenerationInput } from './generation.types';

/** A GenerationService whose requests are admitted and then produce nothing until cancelled (`cancelled` lists them). */
function endless() {
  const cancelled: string[] = [];
  const workers = {
    pick: () => ({ addr: 'w', prepare: () => Promise.resolve({ promptTokenIds: [1, 2], maxTokens: 4 }) }),
    toolSupport: () => HERMES_FALLBACK,
    maxModelLen: () => undefined,
  } as unknown as WorkersService;
  const scheduling = {
    submit: () => ({ admitted: Promise.resolve('w'), events: new AsyncQueue() }),
    cancel: (id: string) => void cancelled.push(id),
  } as unknown as SchedulingService;
  const generation = new GenerationService(workers, { add: () => undefined } as unknown as RecordsService, scheduling);
  return { generation, workers, cancelled };
}

const sampling = { maxTokens: 4, stop: [], stopTokenIds: [], ignoreEos: false };

describe('a throw before the choices are merged', () => {
  const spies = logSpies();
  afterEach(() => jest.restoreAllMocks());

  it('gRPC Generate: the choices are aborted and the id is free again', async () => {
    const { generation, workers, cancelled } = endless();
    jest.spyOn(generateTools, 'GrpcToolStream').mockImplementation(() => {
      throw new Error('tool stream failed');
    });
    const admission = Object.assign(() => undefined, { tenant: 't' });
    const gate = { admit: jest.fn().mockResolvedValue(admission) } as unknown as CallGate;
    const tools: inference.Tools = { functions: [{ name: 'f', description: '', parameters: '' }], choice: 'auto', function: '', parallelToolCalls: true };
    const request: inference.GenerateRequest = { model: 'sql', prompt: '', messages: [{ role: 'user', content: 'hi' }], requestId: 'job', sampling, tools };
    const { done, stream } = generateCall(request);
    inferenceHandlers(generation, workers, gate).generate(stream);
    expect(await done).not.toBeNull(); // failed with a status, not ended
    expect(spies.error).toHaveBeenCalledTimes(1); // the bug, logged once
    expect(cancelled).toEqual(['t/job']); // before: still queued, and the id held
    expect(() => generation.reserve({ model: 'sql', prompt: 'hi', messages: [], sampling, api: 'grpc', requestId: 'job', tenant: 't' })()).not.toThrow();
  });

  it('OpenAI stream: the choices are aborted and the id is free again', async () => {
    const { generation, cancelled } = endless();
    const res = Object.assign(new EventEmitter(), {
      destroyed: false,
      writableFinished: false,
      status: () => res,
      set: () => res,
      flushHeaders: () => {
        throw new Error('socket gone');
      },
    });
    const input: GenerationInput = { model: 'sql', prompt: 'hi', messages: [], sampling, api: 'grpc', requestId: 'job', tenant: 't' };
    const responding = new OpenAIResponder(generation).respond('completions', { input, stream: true, includeUsage: false, n: 1 }, res as unknown as Response);
    await expect(responding).rejects.toThrow('socket gone');
    expect(cancelled).toEqual(['t/job']); // before: still queued, and the id held
    expect(() => generation.reserve(input)()).not.toThrow();
  });
});
