import { PromptPredictor, QuantilePredictor } from '@inlaid/scheduling';
import { trainPredictor } from './predictor-training';

const records = Array.from({ length: 40 }, (_, i) => ({ task: i % 2 === 0 ? 'short' : 'long', promptTokens: 40, outputTokens: i % 2 === 0 ? 5 : 200 }));

describe('trainPredictor (start-up training from request records, counts only)', () => {
  it('teaches the quantile predictor per-task lengths', () => {
    const p = new QuantilePredictor();
    expect(p.predict('short', 40).support).toBe(0);
    trainPredictor(p, records);
    expect(p.predict('short', 40).p50).toBe(5);
    expect(p.predict('long', 40).p50).toBe(200);
  });

  it('fits the prompt predictor without prompt text', () => {
    const p = new PromptPredictor({ minTrain: 8 });
    trainPredictor(p, records);
    expect(p.predict('short', 40).p50).toBeLessThan(p.predict('long', 40).p50);
  });
});
