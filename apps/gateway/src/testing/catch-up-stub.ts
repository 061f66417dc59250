/**
 * A minimal explicit stand-in for AdapterCatchUp (a required dependency of OnboardSteps and TasksService) in specs that
 * run no catch-up: it records the workers it is asked to look at again (recheck) and does nothing else.
 */
import type { AdapterCatchUp } from '../tasks/adapter-catch-up.service';

export interface CatchUpStub {
  catchUp: AdapterCatchUp;
  /** The addresses passed to recheck, in order. */
  rechecks: string[];
}

export function catchUpStub(): CatchUpStub {
  const rechecks: string[] = [];
  const stub: Pick<AdapterCatchUp, 'recheck'> = { recheck: (addr: string) => void rechecks.push(addr) };
  return { catchUp: stub as AdapterCatchUp, rechecks };
}
