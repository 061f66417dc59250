import type { GenerationDelta } from '../generation/generation.types';
import { sseEvent, SSE_DONE } from './sse';
import { StreamEncoder } from './stream-encoder';

const meta = { id: 'x-1', created: 1700000000, model: 'sql' };
const delta = (text: string, finish: GenerationDelta['finishReason'] = null, completion = 1): GenerationDelta => ({
  text, tokenIds: [1], finishReason: finish, promptTokens: 4, completionTokens: completion,
});

function parse(events: string[]): unknown[] {
  return events.map((e) => {
    expect(e.startsWith('data: ')).toBe(true);
    expect(e.endsWith('\n\n')).toBe(true);
    const body = e.slice(6, -2);
    return body === '[DONE]' ? '[DONE]' : JSON.parse(body);
  });
}

describe('sseEvent', () => {
  it('frames JSON on a single data line even when text has newlines', () => {
    const e = sseEvent({ text: 'a\nb' });
    expect(e).toBe('data: {"text":"a\\nb"}\n\n');
    expect(e.slice(0, -2).includes('\n')).toBe(false);
  });
});

describe('StreamEncoder', () => {
  it('encodes a completion stream with finish on the last text chunk', () => {
    const enc = new StreamEncoder('completions', meta, false);
    const events = [...enc.open(), ...enc.delta(delta('Hel')), ...enc.delta(delta('lo', 'length', 2))];
    expect(parse(events)).toEqual([
      { id: 'x-1', object: 'text_completion', created: 1700000000, model: 'sql', choices: [{ text: 'Hel', index: 0, logprobs: null, finish_reason: null }] },
      { id: 'x-1', object: 'text_completion', created: 1700000000, model: 'sql', choices: [{ text: 'lo', index: 0, logprobs: null, finish_reason: 'length' }] },
      '[DONE]',
    ]);
    expect(events[events.length - 1]).toBe(SSE_DONE);
  });

  it('encodes a chat stream: role chunk, content chunks, finish chunk, usage chunk', () => {
    const enc = new StreamEncoder('chat.completions', meta, true);
    const chunks = parse([...enc.open(), ...enc.delta(delta('Hi')), ...enc.delta(delta('', 'stop', 3))]) as Array<Record<string, unknown>>;
    expect(chunks.map((c) => (c === ('[DONE]' as unknown) ? c : (c['choices'] as unknown[])))).toEqual([
      [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: 'Hi' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }],
      [],
      '[DONE]',
    ]);
    expect(chunks[0]!['object']).toBe('chat.completion.chunk');
    expect(chunks[0]!['usage']).toBeNull();
    expect(chunks[3]!['usage']).toEqual({ prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });
  });

  it('omits the usage key entirely without include_usage', () => {
    const enc = new StreamEncoder('chat.completions', meta, false);
    const [first] = parse(enc.open()) as Array<Record<string, unknown>>;
    expect('usage' in first!).toBe(false);
  });
});
