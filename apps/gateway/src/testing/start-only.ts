/** A GenerationService stand-in for handler and responder tests: their own `start`, and a reserve that holds nothing. */
import type { GenerationService } from '../generation/generation.service';
import type { GenerationInput } from '../generation/generation.types';

/** `start` as the whole generation service (fan-out.ts startChoices also calls reserve: here it holds no id). */
export function startOnly(start: (input: GenerationInput, signal?: AbortSignal) => Promise<unknown>): GenerationService {
  return { start, reserve: () => (): void => undefined } as unknown as GenerationService;
}
