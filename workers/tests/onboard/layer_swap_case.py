"""Packed (triton backend) runner on checkpoint A, its layers swapped in place with checkpoint B's, against a
fresh runner on B: prints one JSON line. Run under TRITON_INTERPRET=1 on the CPU (see
test_layer_swap.py)."""

from __future__ import annotations

import json
import os
import sys

import torch


def main(a: str, b: str) -> dict[str, object]:
    from factories import make_step
    from inlaid_worker.onboard.checkpoint_weights import layer_from_packed
    from inlaid_worker.onboard.layer_swap import copy_layer_into, weight_pointers
    from inlaid_worker.quant import read_checkpoint

    kw = dict(num_kv_blocks=16, block_size=4, backend="triton")
    from inlaid_worker.model.runner import ModelRunner

    runner, fresh = ModelRunner(a, **kw), ModelRunner(b, **kw)
    weights, before = runner.weights, weight_pointers(runner.weights.layers)
    linears, _ = read_checkpoint(b)
    for i, layer in enumerate(runner.weights.layers):
        prefix = f"model.layers.{i}."
        packed = {k.removeprefix(prefix): v for k, v in linears.items() if k.startswith(prefix)}
        if not copy_layer_into(layer, layer_from_packed(packed, layer, "cpu", runner.dtype, group_size=32)):
            raise SystemExit(f"layer {i}: layout refused")
    steps = [make_step([([5, 9, 11, 3, 7], 0, [0, 1], -1), ([4, 8], 0, [2], -1)], 4),
             make_step([([6], 5, [0, 1], -1), ([2], 2, [2], -1)], 4)]  # a prefill, then a decode step
    diff = 0.0
    for step in steps:
        diff = max(diff, float((runner.execute(step) - fresh.execute(step)).abs().max()))
    return dict(same_addresses=weight_pointers(runner.weights.layers) == before,
                same_weights_object=runner.weights is weights, max_abs_diff_vs_fresh=diff)


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        from cases import _patch_interpreter_for_numpy  # tests/kernels/cases.py

        _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
