"""Runs the tiny model through the torch and the triton runner backends on the same steps (3 adapters of
different ranks/targets plus base rows; a prefill step in SGMV tiles, then BGMV decode steps) and prints one
JSON line of errors. Run as a script under TRITON_INTERPRET=1 on the CPU (see test_triton_backend.py)."""

from __future__ import annotations

import json
import os
import sys

import torch


def run(model_dir: str, mixed_steps: bool) -> dict[str, object]:
    from factories import make_lora_adapter, make_step
    from inlaid_worker.model.quant_weights import QuantMatrix
    from inlaid_worker.model.runner import ModelRunner

    bs = 4
    runners = {b: ModelRunner(model_dir, num_kv_blocks=40, block_size=bs, max_adapters=4, backend=b)
               for b in ("torch", "triton")}  # fmt: skip
    shapes = [(2, ("q_proj", "k_proj", "v_proj", "o_proj")), (8, ("gate_proj", "up_proj", "down_proj")),
              (16, ("v_proj", "o_proj", "up_proj", "down_proj"))]  # fmt: skip
    for i, (rank, targets) in enumerate(shapes):
        adapter = make_lora_adapter(runners["torch"].config, rank=rank, targets=targets, seed=i + 1)
        for r in runners.values():
            r.add_adapter(f"a{i}", adapter)
    g = torch.Generator().manual_seed(0)
    lens, ids = [18, 6, 16, 20], [0, -1, 1, 2]
    seqs = [torch.randint(3, 300, (n + 2,), generator=g).tolist() for n in lens]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(len(seqs))]
    steps = [[(s[:-2], 0) for s in seqs], [(s[-2:-1], len(s) - 2) for s in seqs], [(s[-1:], len(s) - 1) for s in seqs]]
    # then (dense model only) mixed steps on fresh blocks: whole prompts, prefill chunks after cached context
    # (context > chunk) and decode rows in one step
    tables += [list(range(32, 36)), list(range(36, 40))]
    ids += [1, -1]
    mixed = [(seqs[0][:5], 0), None, None, None, (seqs[3][:6], 0), (seqs[2][:4], 0)]
    mixed_next = [(seqs[0][5:9], 5), (seqs[1][-1:], len(seqs[1]) - 1), None, (seqs[3][-1:], len(seqs[3]) - 1),
                  (seqs[3][6:7], 6), (seqs[2][4:10], 4)]  # fmt: skip
    errs, base_gap = [], 0.0
    for step in steps + ([mixed, mixed_next] if mixed_steps else []):
        chunks = [(new_start[0], new_start[1], tables[i], ids[i]) for i, new_start in enumerate(step) if new_start]
        ref = runners["torch"].execute(make_step(chunks, bs))
        out = runners["triton"].execute(make_step(chunks, bs))
        errs.append(float((out - ref).norm() / ref.norm()))
    # the same last step with every row on the base model: how much the adapters move the logits
    last = [(n, st, tables[i], -1) for i, (n, st) in enumerate(steps[-1])]
    ref = runners["torch"].execute(make_step([(n, st, t, ids[i]) for i, (n, st, t, _) in enumerate(last)], bs))
    base = runners["torch"].execute(make_step(last, bs))
    base_gap = float((ref - base).norm() / ref.norm())
    qkv = runners["triton"].weights.layers[0].qkv
    return dict(step_errors=errs, adapter_effect=base_gap, triton_packed=isinstance(qkv, QuantMatrix),
                torch_dense=isinstance(runners["torch"].weights.layers[0].qkv, torch.Tensor))  # fmt: skip


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        from cases import _patch_interpreter_for_numpy  # tests/kernels/cases.py

        _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    print(json.dumps({name: run(path, name == "dense") for name, path in zip(sys.argv[1::2], sys.argv[2::2], strict=True)}))


if __name__ == "__main__":
    main()
