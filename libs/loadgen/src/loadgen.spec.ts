import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { completionBody } from './client';
import { meetsSlo, percentile, RequestTiming, summarize, tpotOf, ttftOf } from './metrics';
import { syntheticPrompt } from './prompt';
import { replay } from './replay';
import { SseParser } from './sse';

describe('SseParser', () => {
  const stream = 'data: {"a":1}\n\n: keep-alive\n\nevent: x\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]\n\n';

  it('yields the same events however the stream is split', () => {
    const whole = new SseParser().push(stream);
    expect(whole).toEqual(['{"a":1}', 'line1\nline2', '[DONE]']);
    for (const size of [1, 2, 3, 7]) {
      const p = new SseParser();
      const got: string[] = [];
      for (let i = 0; i < stream.length; i += size) got.push(...p.push(stream.slice(i, i + size)));
      expect(got).toEqual(whole);
    }
  });

  it('flushes an unterminated last event at the end', () => {
    const p = new SseParser();
    expect(p.push('data: tail')).toEqual([]);
    expect(p.end()).toEqual(['tail']);
  });
});

describe('metrics', () => {
  const t = (sentS: number, first: number, last: number, tokens: number, ok = true): RequestTiming => ({
    task: 'x', sentS, firstTokenS: first, lastTokenS: last, endS: last, outputTokens: tokens, ok,
  });

  it('computes TTFT, TPOT and SLO from client-side times', () => {
    const a = t(1, 1.5, 2.5, 11);
    expect(ttftOf(a)).toBeCloseTo(0.5);
    expect(tpotOf(a)).toBeCloseTo(0.1);
    expect(meetsSlo(a, { ttftS: 0.6, tpotS: 0.1 })).toBe(true);
    expect(meetsSlo(a, { ttftS: 0.4, tpotS: 0.1 })).toBe(false);
    expect(meetsSlo({ ...a, ok: false }, { ttftS: 9, tpotS: 9 })).toBe(false);
  });

  it('summarizes attainment, throughput and percentiles', () => {
    const r = summarize([t(0, 1, 2, 11), t(0, 3, 4, 11), t(1, 2, 4, 1, false)], { ttftS: 2, tpotS: 1 });
    expect(r.slo_attainment).toBeCloseTo(1 / 3);
    expect(r.throughput_tok_s).toBeCloseTo(22 / 4);
    expect(r.ttft_s.p50).toBeCloseTo(2);
    expect(percentile([4, 1, 3, 2], 90)).toBeCloseTo(3.7);
  });
});

/** A fake OpenAI streaming server: `max_tokens` chunks, 20 ms apart, after a 50 ms "prefill". */
function fakeGateway(bodies: Record<string, unknown>[]): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw) as { max_tokens: number; model: string };
      bodies.push(body);
      if (body.model === 'missing') {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"message":"no such adapter"}}');
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      let i = 0;
      const send = (): void => {
        if (i < body.max_tokens) {
          // Split one event over two writes to exercise the parser on real chunk boundaries.
          const ev = `data: ${JSON.stringify({ choices: [{ text: `t${i}`, index: 0, finish_reason: null }], usage: null })}\n\n`;
          res.write(ev.slice(0, 9));
          res.write(ev.slice(9));
          i++;
          setTimeout(send, 20);
        } else {
          res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: body.max_tokens, total_tokens: 3 + body.max_tokens } })}\n\n`);
          res.end('data: [DONE]\n\n');
        }
      };
      setTimeout(send, 50);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('replay against a local streaming server', () => {
  it('measures what it saw and reports failures', async () => {
    const bodies: Record<string, unknown>[] = [];
    const server = await fakeGateway(bodies);
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const trace = [
        { arrival_s: 0, task: 'xsum', prompt_tokens: 4, output_tokens: 5 },
        { arrival_s: 0.1, task: 'boolq', prompt_tokens: 2, output_tokens: 1, prompt: 'Is it?' },
        { arrival_s: 0.1, task: 'missing', prompt_tokens: 2, output_tokens: 3 },
      ];
      const timings = await replay(trace, { url, ignoreEos: true, timeoutS: 10, timeScale: 1 });
      const [a, b, c] = timings;
      expect(a.outputTokens).toBe(5);
      expect(ttftOf(a)).toBeGreaterThanOrEqual(0.045);
      expect(ttftOf(a)).toBeLessThan(1);
      expect(tpotOf(a)).toBeGreaterThanOrEqual(0.015);
      expect(tpotOf(a)).toBeLessThan(0.5);
      expect(b.sentS).toBeCloseTo(0.1);
      expect(b.outputTokens).toBe(1);
      expect(c.ok).toBe(false);
      expect(c.error).toMatch(/404.*no such adapter/);
      expect(bodies.find((x) => x.model === 'boolq')).toMatchObject({ prompt: 'Is it?', max_tokens: 1, ignore_eos: true, stream: true });
      expect(bodies.find((x) => x.model === 'xsum')?.prompt).toBe(syntheticPrompt(4));
      const report = summarize(timings, { ttftS: 1, tpotS: 0.5 });
      expect(report.succeeded).toBe(2);
      expect(report.slo_attainment).toBeCloseTo(2 / 3);
    } finally {
      server.close();
    }
  });

  it('builds an OpenAI completion body, ignore_eos only when asked', () => {
    const job = { task: 't', prompt: 'p', maxTokens: 3, sentS: 0 };
    expect(completionBody(job, false)).not.toHaveProperty('ignore_eos');
    expect(syntheticPrompt(3)).toBe('hello hello hello');
  });
});
