import { mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { paramOf } from '../testing/invalid-param';
import { isUnder, resolveAdapterPath } from './adapter-location';
import { checkCalibration } from './calibration';
import { parseCreateTask } from './task-input';

const JSON_BODY = { adapter: false, calibration: false };

describe('parseCreateTask', () => {
  it('accepts a full request', () => {
    const t = parseCreateTask({ name: 'sql', adapter: { path: 'sql' }, calibration: '{"text":"a"}\n', slo: { ttft_ms: 200 }, wait_for_quantization: true }, JSON_BODY);
    expect(t).toEqual({ name: 'sql', adapterPath: 'sql', calibration: { kind: 'inline', jsonl: '{"text":"a"}\n' }, slo: { ttft_ms: 200 }, waitForQuantization: true });
  });

  it('names the field at fault', () => {
    expect(paramOf(() => parseCreateTask({ name: '../x', adapter: { path: 'a' }, calibration: '{"text":"a"}' }, JSON_BODY))).toBe('name');
    expect(paramOf(() => parseCreateTask({ name: 'a', calibration: '{"text":"a"}' }, JSON_BODY))).toBe('adapter.path');
    expect(paramOf(() => parseCreateTask({ name: 'a', adapter: { path: 'a' } }, JSON_BODY))).toBe('calibration');
    expect(paramOf(() => parseCreateTask({ name: 'a', adapter: { path: 'a' }, calibration: '{"text":"a"}', slo: { tpot_ms: -1 } }, JSON_BODY))).toBe('slo.tpot_ms');
    expect(paramOf(() => parseCreateTask({ name: 'a', adapter: { path: 'a' }, calibration: { file_id: 'nope' } }, JSON_BODY))).toBe('calibration');
  });

  it('takes SLO targets from a microsecond to 1e9 ms, and names the target outside them', () => {
    const slo = (s: unknown) => () => parseCreateTask({ name: 'a', adapter: { path: 'a' }, calibration: '{"text":"a"}', slo: s }, JSON_BODY);
    expect(slo({ ttft_ms: 0.001, tpot_ms: 1e9 })().slo).toEqual({ ttft_ms: 0.001, tpot_ms: 1e9 });
    for (const bad of [1e-322, 0.0009, 0, -1, 1e9 + 1, NaN, Infinity, '100']) {
      expect(paramOf(slo({ ttft_ms: bad }))).toBe('slo.ttft_ms');
      expect(paramOf(slo({ ttft_ms: 100, tpot_ms: bad }))).toBe('slo.tpot_ms');
    }
  });
});

describe('checkCalibration', () => {
  it('counts records and refuses empty or malformed JSONL with the line', () => {
    expect(checkCalibration('{"text":"a"}\n\n{"messages":[]}\n')).toBe(2);
    expect(() => checkCalibration('\n \n')).toThrow('empty');
    expect(() => checkCalibration('{"text":"a"}\nnope')).toThrow('line 2 is not JSON');
    expect(() => checkCalibration('{"prompt":"a"}')).toThrow('line 1: expected');
  });
});

describe('resolveAdapterPath', () => {
  const root = mkdtempSync(join(tmpdir(), 'inlaid-roots-'));
  const allowed = join(root, 'allowed');
  mkdirSync(join(allowed, 'sql'), { recursive: true });
  mkdirSync(join(root, 'secret'));
  symlinkSync(join(root, 'secret'), join(allowed, 'escape'));

  it('resolves relative names under a root and refuses escapes, also through symlinks', async () => {
    expect(await resolveAdapterPath('sql', [allowed])).toBe(join(allowed, 'sql'));
    await expect(resolveAdapterPath('../secret', [allowed])).rejects.toThrow('outside the allowed adapter roots');
    await expect(resolveAdapterPath('escape', [allowed])).rejects.toThrow('outside the allowed adapter roots');
    await expect(resolveAdapterPath('/etc', [allowed])).rejects.toThrow('outside');
    await expect(resolveAdapterPath('missing', [allowed])).rejects.toThrow('does not exist');
  });

  it('isUnder is a path-component check', () => {
    expect(isUnder('/a/bc', '/a/b')).toBe(false);
    expect(isUnder('/a/b/c', '/a/b')).toBe(true);
  });
});
