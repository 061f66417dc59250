"""The conventions third-party GPTQ readers (transformers + GPTQModel, vLLM) rely on, checked on our files.

bench/quality/interop.py runs the real readers (not installed here); this keeps the conventions they need in
CI: act-order g_idx (desc_act), AutoGPTQ/vLLM's word-triplet reading of 3-bit codes, v1 zeros stored minus
one (vLLM's Marlin ignores qzeros and assumes 2^(bits-1) for symmetric grids), the config keys vLLM's
GPTQConfig / GPTQMarlinConfig read, K % group_size == 0, and files readable by another user.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Tiny
from inlaid_worker.quant import QuantSpec, dequantized_state_dict, quantize_checkpoint
from safetensors.torch import load_file


@pytest.fixture(scope="module", params=[4, 3])
def desc_ckpt(request: pytest.FixtureRequest, tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp(f"desc{request.param}") / "q"
    spec = QuantSpec(bits=request.param, group_size=32, act_order=True, static_groups=False)
    quantize_checkpoint(tiny.base, out, "gptq", spec, tiny.tasks("ab", adapters=False))
    return out, request.param


def _unpack_autogptq(words: torch.Tensor, bits: int) -> np.ndarray:
    """AutoGPTQ's / vLLM's torch reading of int32 rows -> values [rows * 32 / bits, C] (3-bit: each triplet
    of words holds 32 values, values 10 and 21 straddling two words)."""
    w = words.numpy().view(np.uint32).astype(np.int64)
    if bits != 3:
        return np.stack([(w >> (bits * i)) & (2**bits - 1) for i in range(32 // bits)], axis=1).reshape(-1, w.shape[1])
    a, b, c = (w.reshape(-1, 3, w.shape[1])[:, i] for i in range(3))
    vals = [(a >> (3 * i)) & 7 for i in range(10)] + [((a >> 30) & 3) | ((b & 1) << 2)]
    vals += [(b >> (3 * i + 1)) & 7 for i in range(10)] + [((b >> 31) & 1) | ((c & 3) << 1)]
    vals += [(c >> (3 * i + 2)) & 7 for i in range(10)]
    return np.stack(vals, axis=1).reshape(-1, w.shape[1])


def test_desc_act_checkpoint_reads_like_autogptq(desc_ckpt: tuple[Path, int]) -> None:
    out, bits = desc_ckpt
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["desc_act"] is True and qc["checkpoint_format"] == "gptq" and qc["sym"] is True
    raw, ours = load_file(str(out / "model.safetensors")), dequantized_state_dict(out)
    permuted = 0
    for prefix in sorted({k.rsplit(".", 1)[0] for k in raw if k.endswith(".qweight")}):
        g = raw[f"{prefix}.g_idx"].long()
        k = g.shape[0]
        assert torch.equal(torch.bincount(g), torch.full((k // 32,), 32))  # every group has group_size columns
        permuted += int(not torch.equal(g, torch.arange(k) // 32))
        codes = _unpack_autogptq(raw[f"{prefix}.qweight"], bits)  # [K, N]
        zeros = _unpack_autogptq(raw[f"{prefix}.qzeros"].t().contiguous(), bits).T + 1  # v1: stored zero - 1
        assert (zeros == 2 ** (bits - 1)).all()  # symmetric: the fixed zero Marlin's uint4b8/uint8b128 assume
        scales = raw[f"{prefix}.scales"].float().numpy()
        w = scales[g.numpy()] * (codes - zeros[g.numpy()]).astype(np.float32)
        assert torch.equal(torch.from_numpy(np.ascontiguousarray(w.T)), ours[f"{prefix}.weight"])
    assert permuted > 0  # act-order really reordered the groups somewhere


def test_metadata_and_shapes_vllm_needs(desc_ckpt: tuple[Path, int]) -> None:
    out, bits = desc_ckpt
    for qc in (json.loads((out / "config.json").read_text())["quantization_config"],
               json.loads((out / "quantize_config.json").read_text())):
        for key in ("bits", "group_size", "desc_act", "sym", "lm_head", "checkpoint_format"):
            assert key in qc
        assert qc["quant_method"] == "gptq" and qc["bits"] == bits and qc["lm_head"] is False
    raw = load_file(str(out / "model.safetensors"))
    for name, t in raw.items():
        if name.endswith(".g_idx"):
            assert t.shape[0] % 32 == 0  # vLLM: input_size_per_partition % group_size == 0
        if name.endswith(".scales"):
            assert t.dtype == torch.float16 and t.shape[1] % (32 if bits == 3 else 32 // bits) == 0


def test_checkpoint_is_readable_by_other_users(desc_ckpt: tuple[Path, int]) -> None:
    out, _ = desc_ckpt
    assert stat.S_IMODE(out.stat().st_mode) & 0o055 == 0o055
    for f in out.rglob("*"):
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f
