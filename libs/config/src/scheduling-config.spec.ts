import { parseSchedulingConfig, SchedulingConfigError } from './scheduling-config';

describe('parseSchedulingConfig', () => {
  it('applies the documented defaults', () => {
    expect(parseSchedulingConfig({})).toEqual({
      policy: 'inlaid', beta: 10, predictor: 'quantile', sloTtftMs: 5000, sloTpotMs: 200, maxLoras: 4, abortHopeless: false,
      triage: true, batchNeedRoom: true, batchBudgetRoom: true, budgetFixedPrefill: 'auto',
      workerRows: 72, workerPrefillTokens: 2048, tickMs: 50, trainRecords: 5000, costModelPath: null,
      costFit: 'off', costFitWindow: 2000, costFitMinSteps: 200, costFitExport: null,
      costFitTerms: ['base_s', 'prefill_token_s', 'decode_row_s', 'adapter_s', 'kv_token_s', 'prefill_step_s'], costFitPlanQuantile: null,
    });
  });

  it('reads every knob', () => {
    const c = parseSchedulingConfig({
      INLAID_POLICY: 'fcfs-maxloras', INLAID_BETA: '3', INLAID_PREDICTOR: 'prompt', INLAID_SLO_TTFT_MS: '1500.5',
      INLAID_SLO_TPOT_MS: '80', INLAID_MAX_LORAS: '1', INLAID_ABORT_HOPELESS: 'TRUE', INLAID_SCHED_MAX_ROWS: '9',
      INLAID_SCHED_MAX_PREFILL_TOKENS: '512', INLAID_SCHED_TICK_MS: '20', INLAID_PREDICTOR_TRAIN_RECORDS: '0',
      INLAID_COST_MODEL: ' /etc/inlaid/h200.json ', INLAID_TRIAGE: 'false', INLAID_BATCH_NEED_ROOM: 'False', INLAID_BATCH_BUDGET_ROOM: 'false',
      INLAID_BUDGET_FIXED_PREFILL: ' true ',
    });
    expect(c).toMatchObject({ policy: 'fcfs-maxloras', beta: 3, predictor: 'prompt', sloTtftMs: 1500.5, sloTpotMs: 80, maxLoras: 1 });
    expect(c).toMatchObject({ abortHopeless: true, workerRows: 9, workerPrefillTokens: 512, tickMs: 20, trainRecords: 0 });
    expect(c.costModelPath).toBe('/etc/inlaid/h200.json');
    expect(c).toMatchObject({ triage: false, batchNeedRoom: false, batchBudgetRoom: false, budgetFixedPrefill: true });
  });

  it('reads the online cost fit settings', () => {
    const c = parseSchedulingConfig({ INLAID_COST_FIT: 'online', INLAID_COST_FIT_WINDOW: '500', INLAID_COST_FIT_MIN_STEPS: '50', INLAID_COST_FIT_EXPORT: '/tmp/fit.json', INLAID_COST_FIT_TERMS: ' base_s, kv_token_s ,base_s', INLAID_COST_FIT_PLAN_QUANTILE: '0.9' });
    expect(c).toMatchObject({ costFit: 'online', costFitWindow: 500, costFitMinSteps: 50, costFitExport: '/tmp/fit.json', costFitTerms: ['base_s', 'kv_token_s'], costFitPlanQuantile: 0.9 });
  });

  it('treats an empty policy switch as its default', () => {
    const c = parseSchedulingConfig({ INLAID_TRIAGE: '', INLAID_BATCH_NEED_ROOM: ' ', INLAID_BUDGET_FIXED_PREFILL: '' });
    expect(c).toMatchObject({ triage: true, batchNeedRoom: true, budgetFixedPrefill: 'auto' });
  });

  it.each([
    ['on', true], ['ON', true], [' true ', true], ['True', true],
    ['off', false], ['Off', false], ['false', false], ['FALSE', false],
    ['auto', 'auto'], [' Auto ', 'auto'],
  ])('reads INLAID_BUDGET_FIXED_PREFILL=%j as %j', (v, want) => {
    expect(parseSchedulingConfig({ INLAID_BUDGET_FIXED_PREFILL: v }).budgetFixedPrefill).toBe(want);
  });

  it('explains a bad INLAID_BUDGET_FIXED_PREFILL with the accepted values', () => {
    expect(() => parseSchedulingConfig({ INLAID_BUDGET_FIXED_PREFILL: 'yes' })).toThrow(
      'INLAID_BUDGET_FIXED_PREFILL: expected on, off or auto (or true / false), got "yes"',
    );
  });

  it('explains a bad policy switch with the variable and the accepted values', () => {
    expect(() => parseSchedulingConfig({ INLAID_TRIAGE: '1' })).toThrow('INLAID_TRIAGE: expected true or false, got "1"');
  });

  it.each([
    [{ INLAID_POLICY: 'sjf' }, 'INLAID_POLICY'],
    [{ INLAID_BETA: '0' }, 'INLAID_BETA'],
    [{ INLAID_BETA: '2.5' }, 'INLAID_BETA'],
    [{ INLAID_PREDICTOR: 'oracle' }, 'INLAID_PREDICTOR'],
    [{ INLAID_SLO_TTFT_MS: '0' }, 'INLAID_SLO_TTFT_MS'],
    [{ INLAID_SLO_TPOT_MS: '-5' }, 'INLAID_SLO_TPOT_MS'],
    [{ INLAID_SLO_TTFT_MS: '0.0005' }, 'INLAID_SLO_TTFT_MS'], // below the database's CHECK (0.001 ms)
    [{ INLAID_SLO_TPOT_MS: '1000000001' }, 'INLAID_SLO_TPOT_MS'], // above it (1e9 ms)
    [{ INLAID_MAX_LORAS: 'many' }, 'INLAID_MAX_LORAS'],
    [{ INLAID_ABORT_HOPELESS: 'yes' }, 'INLAID_ABORT_HOPELESS'],
    [{ INLAID_SCHED_MAX_ROWS: '0' }, 'INLAID_SCHED_MAX_ROWS'],
    [{ INLAID_TRIAGE: 'on' }, 'INLAID_TRIAGE'],
    [{ INLAID_BATCH_NEED_ROOM: 'no' }, 'INLAID_BATCH_NEED_ROOM'],
    [{ INLAID_BATCH_BUDGET_ROOM: 'no' }, 'INLAID_BATCH_BUDGET_ROOM'],
    [{ INLAID_BUDGET_FIXED_PREFILL: '0' }, 'INLAID_BUDGET_FIXED_PREFILL'],
    [{ INLAID_BUDGET_FIXED_PREFILL: 'automatic' }, 'INLAID_BUDGET_FIXED_PREFILL'],
    [{ INLAID_COST_FIT: 'on' }, 'INLAID_COST_FIT'],
    [{ INLAID_COST_FIT_WINDOW: '5' }, 'INLAID_COST_FIT_WINDOW'],
    [{ INLAID_COST_FIT_MIN_STEPS: '300', INLAID_COST_FIT_WINDOW: '200' }, 'INLAID_COST_FIT_MIN_STEPS'],
    [{ INLAID_COST_FIT_TERMS: 'base_s,rows' }, 'INLAID_COST_FIT_TERMS'],
    [{ INLAID_COST_FIT_PLAN_QUANTILE: '1.5' }, 'INLAID_COST_FIT_PLAN_QUANTILE'],
    [{ INLAID_COST_FIT_PLAN_QUANTILE: '0' }, 'INLAID_COST_FIT_PLAN_QUANTILE'],
  ])('rejects %j naming %s', (env, variable) => {
    expect(() => parseSchedulingConfig(env)).toThrow(SchedulingConfigError);
    expect(() => parseSchedulingConfig(env)).toThrow(variable);
  });
});
