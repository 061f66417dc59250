import { bearerKey, displayPrefix, generateApiKey, hashApiKey, KEY_PREFIX, sameDigest } from './key-material';

describe('API key material', () => {
  it('generates distinct 256-bit keys whose stored form is only a sha256 digest and a short prefix', () => {
    const a = generateApiKey();
    const b = generateApiKey();
    expect(a.key).not.toBe(b.key);
    expect(a.key.startsWith(KEY_PREFIX)).toBe(true);
    expect(Buffer.from(a.key.slice(KEY_PREFIX.length), 'base64url')).toHaveLength(32);
    expect(a.hash).toBe(hashApiKey(a.key));
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.prefix).toBe(displayPrefix(a.key));
    expect(a.key.length - a.prefix.length).toBeGreaterThanOrEqual(36);
  });

  it('compares digests in constant time and never equal across keys', () => {
    const a = generateApiKey();
    expect(sameDigest(a.hash, hashApiKey(a.key))).toBe(true);
    expect(sameDigest(a.hash, generateApiKey().hash)).toBe(false);
    expect(sameDigest(a.hash, '')).toBe(false);
  });

  it.each([
    ['Bearer abc', 'abc'],
    ['bearer   abc  ', 'abc'],
    [undefined, null],
    ['', null],
    ['Basic abc', null],
    ['Bearer', null],
    ['Bearer a b', null],
    [`Bearer ${'x'.repeat(300)}`, null],
  ])('reads the bearer key of %p', (header, key) => {
    expect(bearerKey(header)).toBe(key);
  });
});
