/**
 * Fixture for the onboarding e2e tests: the tiny model, an MLGPTQ checkpoint of it for the tasks sql + poet
 * (with stored Hessians), and an adapter root holding a new task's adapter plus bad ones (pickle, wrong shapes).
 * Built once per run, each suite gets a copy (fixture-cache.ts).
 */
import { join } from 'node:path';
import { cachedFixture } from './fixture-cache';
import { runPython, TinyFixture } from './python-worker';

export interface OnboardFixture extends TinyFixture {
  readonly checkpoint: string;
  readonly adapterRoot: string;
  readonly dataDir: string;
  readonly calibration: string;
}

export const CALIBRATION = Array.from({ length: 4 }, (_, i) => JSON.stringify({ text: `Question ${i}: what is ${i} + 2? Answer: ${i + 2}.` })).join('\n');

const MAKE = `
import json, sys, torch, pathlib
torch.set_num_threads(1)
sys.path.insert(0, 'workers/tests')
from factories import make_tiny_llama, make_random_adapter
from inlaid_worker.quant import QuantSpec, TaskData, quantize_checkpoint
from inlaid_worker.quant.calib import tokenize_records
from transformers import AutoTokenizer
root = pathlib.Path(sys.argv[1]); calib = [json.loads(l) for l in sys.argv[2].splitlines()]
base = make_tiny_llama(root / 'model', seed=0)
make_random_adapter(root / 'adapters/sql', base, rank=8, alpha=16, targets=['q_proj', 'v_proj'], seed=1)
make_random_adapter(root / 'adapters/poet', base, rank=4, alpha=8, targets=['q_proj', 'o_proj', 'up_proj'], seed=2)
ar = root / 'adapter-root'
for i, n in enumerate(['newtask', 'second', 'third']):
    make_random_adapter(ar / n, base, rank=4, alpha=8, targets=['q_proj', 'v_proj', 'down_proj'], seed=10 + i)
other = make_tiny_llama(root / 'other-model', hidden=32, intermediate=64, seed=3)
make_random_adapter(ar / 'wrongshape', other, rank=4, alpha=8, targets=['q_proj'], seed=4)
cfg = json.loads((ar / 'wrongshape/adapter_config.json').read_text()); cfg['base_model_name_or_path'] = str(base)
(ar / 'wrongshape/adapter_config.json').write_text(json.dumps(cfg))
(ar / 'pickled').mkdir(); (ar / 'pickled/adapter_config.json').write_text((ar / 'newtask/adapter_config.json').read_text())
torch.save({'x': torch.zeros(2)}, ar / 'pickled/adapter_model.bin')
tok = AutoTokenizer.from_pretrained(base)
seqs = tokenize_records(calib, tok, 256)
tasks = [TaskData(n, root / 'adapters' / n, seqs) for n in ('poet', 'sql')]
quantize_checkpoint(base, root / 'ckpt', 'mlgptq', QuantSpec(bits=4, group_size=32), tasks)
`;

export async function makeOnboardFixture(): Promise<OnboardFixture> {
  const root = await cachedFixture('onboard', 'inlaid-onboard-e2e-', (dir) => runPython(MAKE, [dir, CALIBRATION]));
  return {
    root,
    modelDir: join(root, 'model'),
    adaptersDir: join(root, 'adapters'),
    adapters: ['poet', 'sql'],
    checkpoint: join(root, 'ckpt'),
    adapterRoot: join(root, 'adapter-root'),
    dataDir: join(root, 'data'),
    calibration: CALIBRATION,
  };
}
