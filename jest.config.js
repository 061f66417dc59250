/** Root jest config: every TS project's *.spec.ts, with @inlaid/* mapped to library sources. */
const base = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  moduleNameMapper: { '^@inlaid/([^/]+)$': '<rootDir>/libs/$1/src' },
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.jest.json' }] },
};
module.exports = {
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
