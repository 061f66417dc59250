import { parseSchedulingConfig, SchedulingConfigError } from './scheduling-config';

describe('parseSchedulingConfig', () => {
  it('applies the documented defaults', () => {
    expect(parseSchedulingConfig({})).toEqual({
      policy: 'inlaid', beta: 10, predictor: 'quantile', sloTtftMs: 5000, sloTpotMs: 200, maxLoras: 4, abortHopeless: false,
      workerRows: 72, workerPrefillTokens: 2048, tickMs: 50, trainRecords: 5000, costModelPath: null,
    });
  });

  it('reads every knob', () => {
    const c = parseSchedulingConfig({
      INLAID_POLICY: 'fcfs-maxloras', INLAID_BETA: '3', INLAID_PREDICTOR: 'prompt', INLAID_SLO_TTFT_MS: '1500.5',
      INLAID_SLO_TPOT_MS: '80', INLAID_MAX_LORAS: '1', INLAID_ABORT_HOPELESS: 'TRUE', INLAID_SCHED_MAX_ROWS: '9',
      INLAID_SCHED_MAX_PREFILL_TOKENS: '512', INLAID_SCHED_TICK_MS: '20', INLAID_PREDICTOR_TRAIN_RECORDS: '0',
      INLAID_COST_MODEL: ' /etc/inlaid/h200.json ',
    });
    expect(c).toMatchObject({ policy: 'fcfs-maxloras', beta: 3, predictor: 'prompt', sloTtftMs: 1500.5, sloTpotMs: 80, maxLoras: 1 });
    expect(c).toMatchObject({ abortHopeless: true, workerRows: 9, workerPrefillTokens: 512, tickMs: 20, trainRecords: 0 });
    expect(c.costModelPath).toBe('/etc/inlaid/h200.json');
  });

  it.each([
    [{ INLAID_POLICY: 'sjf' }, 'INLAID_POLICY'],
    [{ INLAID_BETA: '0' }, 'INLAID_BETA'],
    [{ INLAID_BETA: '2.5' }, 'INLAID_BETA'],
    [{ INLAID_PREDICTOR: 'oracle' }, 'INLAID_PREDICTOR'],
    [{ INLAID_SLO_TTFT_MS: '0' }, 'INLAID_SLO_TTFT_MS'],
    [{ INLAID_SLO_TPOT_MS: '-5' }, 'INLAID_SLO_TPOT_MS'],
    [{ INLAID_MAX_LORAS: 'many' }, 'INLAID_MAX_LORAS'],
    [{ INLAID_ABORT_HOPELESS: 'yes' }, 'INLAID_ABORT_HOPELESS'],
    [{ INLAID_SCHED_MAX_ROWS: '0' }, 'INLAID_SCHED_MAX_ROWS'],
  ])('rejects %j naming %s', (env, variable) => {
    expect(() => parseSchedulingConfig(env)).toThrow(SchedulingConfigError);
    expect(() => parseSchedulingConfig(env)).toThrow(variable);
  });
});
