/**
 * A minimal explicit stand-in for AdapterCatchUp (a required dependency of OnboardSteps and TasksService) in specs that
 * run no catch-up: its recheck does nothing.
 */
import type { AdapterCatchUp } from '../tasks/adapter-catch-up.service';

export function catchUpStub(): AdapterCatchUp {
  const stub: Pick<AdapterCatchUp, 'recheck'> = { recheck: () => undefined };
  return stub as AdapterCatchUp;
}
