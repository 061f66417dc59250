import { parseKeysArgs, UsageError } from './keys-args';

describe('parseKeysArgs', () => {
  it('parses create with scopes and limits', () => {
    expect(parseKeysArgs(['create', '--name', 'ci bot', '--scopes', 'inference,dashboard:read', '--rpm', '600', '--concurrency', '8'])).toEqual({
      kind: 'create',
      spec: { name: 'ci bot', scopes: ['inference', 'dashboard:read'], rateLimitRpm: 600, concurrencyLimit: 8 },
    });
    expect(parseKeysArgs(['create', '--name', 'x', '--scopes', 'tasks:admin'])).toMatchObject({ spec: { rateLimitRpm: null, concurrencyLimit: null } });
  });

  it('parses list and revoke', () => {
    expect(parseKeysArgs(['list'])).toEqual({ kind: 'list', json: false });
    expect(parseKeysArgs(['list', '--json'])).toEqual({ kind: 'list', json: true });
    expect(parseKeysArgs(['revoke', 'sk-inlaid-abcdef'])).toEqual({ kind: 'revoke', target: 'sk-inlaid-abcdef' });
  });

  it.each([
    [[]],
    [['drop']],
    [['create', '--scopes', 'inference']],
    [['create', '--name', 'x']],
    [['create', '--name', 'x', '--scopes', 'root']],
    [['create', '--name', 'x;rm -rf /', '--scopes', 'inference']],
    [['create', '--name', 'x', '--scopes', 'inference', '--rpm', '0']],
    [['create', '--name', 'x', '--scopes', 'inference', '--rpm']],
    [['create', '--name', 'x', '--scopes', 'inference', '--admin', 'yes']],
    [['revoke']],
    [['list', '--all']],
  ])('refuses %j with a usage error', (argv) => {
    expect(() => parseKeysArgs(argv)).toThrow(UsageError);
  });
});
