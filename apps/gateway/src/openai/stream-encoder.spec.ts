import type { common } from '@inlaid/proto';
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
    expect(chunks[3]!['usage']).toEqual({ prompt_tokens: 4, completion_tokens: 3, total_tokens: 7, prompt_tokens_details: { cached_tokens: 0 } });
  });

  it('omits the usage key entirely without include_usage', () => {
    const enc = new StreamEncoder('chat.completions', meta, false);
    const [first] = parse(enc.open()) as Array<Record<string, unknown>>;
    expect('usage' in first!).toBe(false);
  });

  it('streams n choices by index and ends once every choice has finished, usage summed', () => {
    const enc = new StreamEncoder('completions', meta, true, { choices: 2 });
    const events = parse([
      ...enc.open(),
      ...enc.delta(delta('a'), 1),
      ...enc.delta(delta('b', 'length', 2), 0),
      ...enc.delta(delta('c', 'stop', 3), 1),
    ]) as Array<Record<string, unknown>>;
    expect(events.slice(0, 3).map((e) => (e['choices'] as Array<Record<string, unknown>>)[0])).toEqual([
      { text: 'a', index: 1, logprobs: null, finish_reason: null },
      { text: 'b', index: 0, logprobs: null, finish_reason: 'length' },
      { text: 'c', index: 1, logprobs: null, finish_reason: 'stop' },
    ]);
    expect(events[3]!['usage']).toEqual({ prompt_tokens: 4, completion_tokens: 5, total_tokens: 9, prompt_tokens_details: { cached_tokens: 0 } });
    expect(events[4]).toBe('[DONE]');
    expect(events).toHaveLength(5); // no [DONE] after the first choice finished
  });

  it("reports the prompt's cached tokens in the usage chunk: the fewest any choice took from the cache", () => {
    const cached = (d: GenerationDelta, cachedTokens: number): GenerationDelta => ({ ...d, promptTokens: 40, cachedTokens });
    const one = new StreamEncoder('chat.completions', meta, true);
    const single = parse([...one.delta(cached(delta('a'), 32)), ...one.delta(cached(delta('', 'stop', 2), 32))]);
    expect((single[2] as Record<string, unknown>)['usage']).toEqual({
      prompt_tokens: 40, completion_tokens: 2, total_tokens: 42, prompt_tokens_details: { cached_tokens: 32 },
    });
    const two = new StreamEncoder('completions', meta, true, { choices: 2 });
    const events = parse([
      ...two.delta(cached(delta('a', 'stop', 1), 0), 0), // computed the prompt
      ...two.delta(cached(delta('b', 'stop', 1), 32), 1), // reused it
    ]) as Array<Record<string, unknown>>;
    expect(events[2]!['usage']).toEqual({ prompt_tokens: 40, completion_tokens: 2, total_tokens: 42, prompt_tokens_details: { cached_tokens: 0 } });
  });

  it('opens a chat stream with a role chunk per choice', () => {
    const enc = new StreamEncoder('chat.completions', meta, false, { choices: 3 });
    const chunks = parse(enc.open()) as Array<{ choices: Array<{ index: number; delta: unknown }> }>;
    expect(chunks.map((c) => c.choices[0]!.index)).toEqual([0, 1, 2]);
    expect(chunks.every((c) => JSON.stringify(c.choices[0]!.delta) === '{"role":"assistant","content":""}')).toBe(true);
  });

  it('puts the logprobs of held-back tokens on the next chunk of their choice (completions)', () => {
    const enc = new StreamEncoder('completions', meta, false, { logprobs: true });
    const events = parse([
      ...enc.delta({ ...delta('', null, 1), logprobs: [lp(7, '\ufffd', -0.5, [[7, '\ufffd', -0.5]])] }), // held: no chunk
      ...enc.delta({ ...delta('é', null, 2), logprobs: [lp(8, '\ufffd', -1.5, [[9, 'x', -0.25]])] }),
      ...enc.delta({ ...delta('!', 'stop', 3), logprobs: [lp(10, '!', -Infinity, [])] }),
    ]) as Array<{ choices: Array<{ text: string; logprobs: unknown }> }>;
    expect(events).toHaveLength(3);
    expect(events[0]!.choices[0]).toEqual({
      text: 'é', index: 0, finish_reason: null,
      logprobs: {
        tokens: ['\ufffd', '\ufffd'],
        token_logprobs: [-0.5, -1.5],
        top_logprobs: [{ '\ufffd': -0.5 }, { x: -0.25, '\ufffd': -1.5 }],
        text_offset: [0, 1],
      },
    });
    // -inf has no JSON form: sent as -9999 (as vLLM and OpenAI do); text_offset continues across chunks
    expect(events[1]!.choices[0]!.logprobs).toEqual({ tokens: ['!'], token_logprobs: [-9999], top_logprobs: [{ '!': -9999 }], text_offset: [2] });
  });

  it('puts chat logprobs on content chunks and the last tokens on the finish chunk', () => {
    const enc = new StreamEncoder('chat.completions', meta, false, { logprobs: true });
    const events = parse([
      ...enc.delta({ ...delta('Hi', null, 1), logprobs: [lp(5, 'Hi', -0.125, [[5, 'Hi', -0.125], [6, 'Ho', -2.5]])] }),
      ...enc.delta({ ...delta('', 'stop', 2), logprobs: [lp(2, '</s>', -0.75, [[2, '</s>', -0.75], [3, '.', -1]])] }),
    ]) as Array<{ choices: Array<{ delta: unknown; logprobs: unknown; finish_reason: unknown }> }>;
    expect(events[0]!.choices[0]!.logprobs).toEqual({
      content: [
        {
          token: 'Hi', logprob: -0.125, bytes: [72, 105],
          top_logprobs: [{ token: 'Hi', logprob: -0.125, bytes: [72, 105] }, { token: 'Ho', logprob: -2.5, bytes: [72, 111] }],
        },
      ],
      refusal: null,
    });
    expect(events[1]!.choices[0]!.finish_reason).toBe('stop');
    expect((events[1]!.choices[0]!.logprobs as { content: Array<{ token: string }> }).content.map((c) => c.token)).toEqual(['</s>']);
  });

  it('sends logprobs: null when the request did not ask, even if a delta has them', () => {
    const enc = new StreamEncoder('chat.completions', meta, false);
    const [chunk] = parse(enc.delta({ ...delta('Hi'), logprobs: [lp(5, 'Hi', -0.1, [])] })) as Array<{ choices: Array<{ logprobs: unknown }> }>;
    expect(chunk!.choices[0]!.logprobs).toBeNull();
  });
});

function entry(tokenId: number, token: string, logprob: number): common.LogprobEntry {
  return { tokenId, token, tokenBytes: Buffer.from(token, 'utf8'), logprob };
}

function lp(tokenId: number, token: string, logprob: number, top: Array<[number, string, number]>): common.TokenLogprob {
  return { sampled: entry(tokenId, token, logprob), top: top.map(([i, t, v]) => entry(i, t, v)) };
}
