/** Builds a length predictor by name (configuration is read once at start-up). */
import { ConstantPredictor, MeanPredictor } from './mean-predictor';
import { PromptPredictor } from './prompt-predictor';
import { QuantilePredictor } from './quantile-predictor';
import { LengthPredictor, PredictorName } from './types';

export const PREDICTOR_NAMES: readonly PredictorName[] = ['quantile', 'mean', 'none', 'prompt'];

export function createPredictor(name: PredictorName): LengthPredictor {
  switch (name) {
    case 'quantile':
      return new QuantilePredictor();
    case 'mean':
      return new MeanPredictor();
    case 'none':
      return new ConstantPredictor();
    case 'prompt':
      return new PromptPredictor();
    default:
      throw new Error(`unknown predictor "${String(name)}"; expected one of ${PREDICTOR_NAMES.join(', ')}`);
  }
}
