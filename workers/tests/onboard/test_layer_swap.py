"""A re-quantized layer copied into the serving tensors in place (onboard.layer_swap): every device address a
CUDA decode graph captured stays the same, and the runner then gives exactly the outputs of a fresh runner
built from the new checkpoint (dense in-process; packed through quant_matmul in a subprocess under Triton's
interpreter). A layer whose layout differs is refused with nothing copied."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.quant_weights import load_gptq_weights
from inlaid_worker.model.runner import ModelRunner
from inlaid_worker.onboard.checkpoint_weights import layer_from_packed
from inlaid_worker.onboard.layer_swap import MATRICES, copy_layer_into, host_copy, weight_pointers
from inlaid_worker.quant import QuantSpec, quantize_checkpoint, read_checkpoint
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
SPEC = QuantSpec(bits=4, group_size=32)
LAYERS = 2


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Checkpoints A and B of the same model shape, norms and embeddings; B's linears differ."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("layer_swap")
    base_a = make_tiny_llama(root / "base_a", layers=LAYERS)
    base_b = root / "base_b"
    shutil.copytree(base_a, base_b)
    tensors = load_file(str(base_b / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    for name, t in tensors.items():
        if name.endswith("proj.weight"):
            tensors[name] = t + 0.05 * torch.randn(t.shape, generator=gen, dtype=t.dtype)
    save_file(tensors, str(base_b / "model.safetensors"), metadata={"format": "pt"})
    a = quantize_checkpoint(base_a, root / "ckpt_a", "rtn", SPEC).out_dir
    b = quantize_checkpoint(base_b, root / "ckpt_b", "rtn", SPEC).out_dir
    return a, b


def _packed_layer(ckpt: Path, layer: int) -> dict:
    linears, _ = read_checkpoint(ckpt)
    prefix = f"model.layers.{layer}."
    return {k.removeprefix(prefix): v for k, v in linears.items() if k.startswith(prefix)}


def _swap_all(layers: tuple, ckpt: Path, dtype: torch.dtype) -> None:
    for i, layer in enumerate(layers):
        staged = layer_from_packed(_packed_layer(ckpt, i), layer, "cpu", dtype, group_size=SPEC.group_size)
        assert copy_layer_into(layer, staged)


def test_packed_swap_keeps_every_address_and_equals_a_fresh_load(ckpts: tuple[Path, Path]) -> None:
    a, b = ckpts
    cfg = load_model_config(a)
    served = load_gptq_weights(a, cfg, "cpu", torch.float16, packed=True)
    before = weight_pointers(served.layers)
    objects = [(layer, layer.qkv, layer.qkv.parts[0]) for layer in served.layers]
    _swap_all(served.layers, b, torch.float16)
    assert weight_pointers(served.layers) == before
    assert objects == [(layer, layer.qkv, layer.qkv.parts[0]) for layer in served.layers]
    fresh = load_gptq_weights(b, cfg, "cpu", torch.float16, packed=True)
    old = load_gptq_weights(a, cfg, "cpu", torch.float16, packed=True)
    for got, want, was in zip(served.layers, fresh.layers, old.layers, strict=True):
        for name in MATRICES:
            for p, q, r in zip(getattr(got, name).parts, getattr(want, name).parts, getattr(was, name).parts,
                               strict=True):  # fmt: skip
                assert torch.equal(p.qweight, q.qweight) and torch.equal(p.qzeros, q.qzeros)
                assert torch.equal(p.scales, q.scales)
                assert not torch.equal(p.scales, r.scales)  # the swap did change the weights


def test_dense_runner_after_the_swap_gives_a_fresh_runners_logits(ckpts: tuple[Path, Path]) -> None:
    a, b = ckpts
    kw = dict(num_kv_blocks=16, block_size=4, backend="torch")
    runner, fresh, old = ModelRunner(a, **kw), ModelRunner(b, **kw), ModelRunner(a, **kw)
    before = weight_pointers(runner.weights.layers)
    weights = runner.weights
    _swap_all(runner.weights.layers, b, torch.float32)
    assert runner.weights is weights and weight_pointers(runner.weights.layers) == before
    step = make_step([([5, 9, 11, 3, 7], 0, [0, 1], -1), ([4, 8], 0, [2], -1)], 4)
    got, want, was = runner.execute(step), fresh.execute(step), old.execute(step)
    assert torch.equal(got, want)
    assert not torch.equal(got, was)


def test_packed_runner_after_the_swap_gives_a_fresh_runners_logits(ckpts: tuple[Path, Path]) -> None:
    """The triton backend (quant_matmul on the packed tensors), in a subprocess under Triton's interpreter."""
    a, b = ckpts
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), str(TESTS / "kernels"), str(HERE)])
    env = dict(os.environ, PYTHONPATH=path, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(HERE / "layer_swap_case.py"), str(a), str(b)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["same_addresses"] and r["same_weights_object"]
    assert r["max_abs_diff_vs_fresh"] == 0.0  # the other tests show the swap changed the weights


def test_a_different_layout_is_refused_and_nothing_is_copied(ckpts: tuple[Path, Path]) -> None:
    a, b = ckpts
    cfg = load_model_config(a)
    served = load_gptq_weights(a, cfg, "cpu", torch.float16, packed=True)
    keep = host_copy(served.layers[0])
    staged = layer_from_packed(_packed_layer(b, 0), served.layers[0], "cpu", torch.float16, group_size=32)
    k = staged.down.parts[0].in_features
    permuted = replace(staged.down.parts[0], perm=torch.randperm(k).to(torch.int32))  # act-order gained
    with_perm = replace(staged, down=replace(staged.down, parts=(permuted,)))
    dense = layer_from_packed(_packed_layer(b, 0), load_gptq_weights(a, cfg, "cpu", torch.float32, packed=False)
                              .layers[0], "cpu", torch.float32)  # fmt: skip
    other_group = replace(staged, o=replace(staged.o, parts=(replace(staged.o.parts[0], group_size=64),)))
    for bad in (with_perm, dense, other_group):
        assert not copy_layer_into(served.layers[0], bad)
    for name in MATRICES:  # all or nothing: qkv, which would fit, was not copied either
        for p, q in zip(getattr(served.layers[0], name).parts, getattr(keep, name).parts, strict=True):
            assert torch.equal(p.qweight, q.qweight) and torch.equal(p.scales, q.scales)


def test_host_copy_never_aliases_the_serving_tensors(ckpts: tuple[Path, Path]) -> None:
    served = load_gptq_weights(ckpts[0], load_model_config(ckpts[0]), "cpu", torch.float16, packed=True)
    copy = host_copy(served.layers[1])
    assert set(weight_pointers((copy,))).isdisjoint(weight_pointers((served.layers[1],)))
    assert copy_layer_into(served.layers[1], copy)  # the same layout, by construction


def test_graphs_keep_the_kernels_reused_buffers_alive() -> None:
    """decode_graphs keeps what a larger call may replace: the split-K workspaces, the dequant scratch and
    quant_tcw's split-K slots."""
    from inlaid_worker.kernels import quant_common, quant_mma, quant_tcw
    from inlaid_worker.model.decode_graphs import _workspaces

    ws, scratch, slots = torch.zeros(3), torch.zeros(5), torch.zeros(7)
    quant_common._WORKSPACES["sentinel"] = (ws, ws)  # type: ignore[index]
    quant_mma._SCRATCH["sentinel"] = scratch  # type: ignore[index]
    quant_tcw._SLOT_WS["sentinel"] = (slots, slots)  # type: ignore[index]
    try:
        kept = _workspaces()
        assert any(k is scratch for k in kept) and any(isinstance(k, tuple) and k[0] is ws for k in kept)
        assert any(isinstance(k, tuple) and k[0] is slots for k in kept)
    finally:
        del quant_common._WORKSPACES["sentinel"], quant_mma._SCRATCH["sentinel"]  # type: ignore[arg-type]
        del quant_tcw._SLOT_WS["sentinel"]  # type: ignore[arg-type]
