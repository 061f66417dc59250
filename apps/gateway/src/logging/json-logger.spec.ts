import { Writable } from 'node:stream';
import { chooseRequestId } from './request-context';
import { formatLogLine, JsonLogger } from './json-logger';

describe('structured logs', () => {
  it('formats one JSON object per line with object fields merged', () => {
    const line = formatLogLine({ level: 'log', context: 'Request', message: { msg: 'done', request_id: 'cmpl-1', ttft_ms: 12 }, now: new Date(0) });
    expect(JSON.parse(line)).toEqual({ ts: '1970-01-01T00:00:00.000Z', level: 'info', context: 'Request', msg: 'done', request_id: 'cmpl-1', ttft_ms: 12 });
    const err = JSON.parse(formatLogLine({ level: 'error', message: 'boom', extra: ['stack here'], now: new Date(0) }));
    expect(err).toMatchObject({ level: 'error', msg: 'boom', stack: 'stack here' });
  });

  it('filters by level and takes the Nest context from the last argument', () => {
    const lines: string[] = [];
    const out = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    const logger = new JsonLogger(['warn'], out);
    logger.log('hidden', 'Ctx');
    logger.warn('shown', 'Ctx');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ level: 'warn', context: 'Ctx', msg: 'shown' });
  });

  it('keeps a sane client x-request-id and replaces anything else', () => {
    expect(chooseRequestId('abc-123', () => 'new')).toBe('abc-123');
    expect(chooseRequestId(['first', 'second'], () => 'new')).toBe('first');
    expect(chooseRequestId('has space', () => 'new')).toBe('new');
    expect(chooseRequestId('x'.repeat(200), () => 'new')).toBe('new');
    expect(chooseRequestId(undefined)).toMatch(/^req-[0-9a-f-]{36}$/);
  });
});
