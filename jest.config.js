/** Root jest config: every TS project's *.spec.ts, with @inlaid/* mapped to library sources. */
const { availableParallelism } = require('node:os');

const base = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  // @inlaid/db/testing: a migrated database of a spec file's own (libs/db/src/testing, for specs only: not built)
  moduleNameMapper: { '^@inlaid/db/testing$': '<rootDir>/libs/db/src/testing/test-database', '^@inlaid/([^/]+)$': '<rootDir>/libs/$1/src' },
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.jest.json' }] },
};
module.exports = {
  // Jest's default is one worker less than the cores: on a 2-core CI machine that is one, and every suite runs in
  // band, one after the other. The e2e suites mostly wait (on their Python workers, Postgres, Redis, timers), so two
  // test workers there run two suites side by side; from 3 cores up this is the default. Each suite keeps its own
  // stack (random database, BullMQ prefix and ports), so suites do not share state; --runInBand still runs in band.
  maxWorkers: Math.max(2, availableParallelism() - 1),
  projects: [
    { ...base, displayName: 'libs', rootDir: __dirname, testMatch: ['<rootDir>/libs/*/src/**/*.spec.ts'] },
    { ...base, displayName: 'gateway', rootDir: __dirname, testMatch: ['<rootDir>/apps/gateway/src/**/*.spec.ts'] },
    {
      ...base,
      displayName: 'e2e',
      rootDir: __dirname,
      testMatch: ['<rootDir>/apps/e2e/src/**/*.e2e-spec.ts'],
      // one worker zygote and fixture cache per run (apps/e2e/src/support/e2e-global-setup.ts)
      globalSetup: '<rootDir>/apps/e2e/src/support/e2e-global-setup.ts',
      globalTeardown: '<rootDir>/apps/e2e/src/support/e2e-global-teardown.ts',
    },
  ],
};
