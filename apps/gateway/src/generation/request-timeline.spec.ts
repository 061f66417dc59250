import { RequestTimeline } from './request-timeline';

describe('RequestTimeline', () => {
  it('records arrival, first token, finish and token counts once', () => {
    const t = new RequestTimeline('r1', 'sql', 'completions', new Date(1000));
    t.routed('w:1', 5);
    t.progress(0, 0, new Date(1500));
    t.progress(1, 5, new Date(2000));
    t.progress(3, 5, new Date(2500));
    const row = t.close('completed', new Date(3000), 'stop', null);
    expect(row).toEqual({
      id: 'r1', task: 'sql', api: 'completions', arrival: new Date(1000), firstToken: new Date(2000), finish: new Date(3000),
      tokensIn: 5, tokensOut: 3, status: 'completed', finishReason: 'stop', error: null, worker: 'w:1',
    });
    expect(t.close('aborted', new Date(4000), null, null)).toBeNull();
  });
});
