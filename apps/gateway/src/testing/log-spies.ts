/** Silenced spies on the Nest Logger's error and warn, fresh for each test of the describe block that calls logSpies. */
import { Logger } from '@nestjs/common';

export interface LogSpies {
  readonly error: jest.SpyInstance;
  readonly warn: jest.SpyInstance;
}

/** Call inside a describe block: `spies.error` / `spies.warn` are (re)made before each of its tests, restored after. */
export function logSpies(): LogSpies {
  const spies = {} as { error: jest.SpyInstance; warn: jest.SpyInstance };
  beforeEach(() => {
    spies.error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    spies.warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => {
    spies.error.mockRestore();
    spies.warn.mockRestore();
  });
  return spies;
}
