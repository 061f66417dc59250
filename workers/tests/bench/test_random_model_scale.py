"""bench/engine/random_model.py's random weights keep a linear's input scale (zero-mean codes, scales ~1/sqrt(K)),
so a random 7B / 13B model stays finite in fp16 (before 2026-11-30 the 7B shape's first down projection reached
7e4 in fp32); layouts, dtypes and bytes are as before, and activation_peaks.py measures it on the tiny shape."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import torch

ENGINE = Path(__file__).resolve().parents[3] / "bench" / "engine"
sys.path.insert(0, str(ENGINE))


@pytest.mark.parametrize("bits", [3, 4])
def test_one_linear_keeps_the_input_scale_and_drops_its_mean(bits: int) -> None:
    from activation_peaks import dequantize_part
    from inlaid_worker.kernels.gptq_packing import unpack_bitstream
    from random_model import random_gptq

    torch.manual_seed(0)
    k, n = 4096, 512  # the 7B shape's K
    part = random_gptq(k, n, bits, torch.device("cpu")).parts[0]
    assert (part.qweight.shape, part.qzeros.shape, part.scales.shape) == ((k * bits // 32, n), (k // 128, -(-n * bits // 32)), (k // 128, n))  # noqa: E501
    assert (part.qweight.dtype, part.qzeros.dtype, part.scales.dtype) == (torch.int32, torch.int32, torch.float16)
    half = 2 ** (bits - 1)
    zeros = unpack_bitstream(part.qzeros, bits, n, dim=1) + part.zero_offset
    assert set(zeros.unique().tolist()) == {half - 1, half}, "zero points around the codes' mean"
    w = dequantize_part(part)  # [N, K] fp32
    x = torch.randn(64, k)
    gain = float((x @ w.T).pow(2).mean().sqrt() / x.pow(2).mean().sqrt())
    assert 0.9 < gain < 1.1, gain
    # a constant input: the old builder (codes - zeros of mean -1) gave outputs of mean -24 (int4 and int3); each group's
    # zero is the codes' mean -+ 1/2 at random, so outputs scatter around 0 (rms ~1.6 int4, ~2.6 int3)
    y = (torch.ones(1, k) @ w.T)[0]
    assert abs(float(y.mean())) < 0.5 and float(y.pow(2).mean().sqrt()) < 4.0, (float(y.mean()), float(y.std()))


def test_tiny_model_layout_bytes_and_peaks() -> None:
    from activation_peaks import activation_peaks
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.quant_weights import QuantMatrix
    from llama_shapes import TINY
    from random_model import random_layer, random_weights, weight_bytes, write_config

    with tempfile.TemporaryDirectory() as tmp:
        c = load_model_config(write_config(TINY, Path(tmp) / "tiny"))
    w = random_weights(c, "int4", torch.device("cpu"), torch.float16)
    h, inter = TINY.hidden, TINY.intermediate
    qkv = c.q_size + 2 * c.kv_size
    assert len(w.layers) == TINY.layers and w.embed.shape == w.lm_head.shape == (TINY.vocab, h)
    layer = w.layers[0]
    assert isinstance(layer.qkv, QuantMatrix) and [m.shape for m in (layer.qkv, layer.o, layer.gate_up, layer.down)] == [(qkv, h), (h, c.q_size), (2 * inter, h), (h, inter)]  # noqa: E501
    assert weight_bytes(w, 1) == weight_bytes(random_weights(c, "int4", torch.device("cpu"), torch.float16), 1)
    dense = random_weights(c, "fp16", torch.device("cpu"), torch.float16).layers[0]
    assert dense.down.dtype == torch.float16 and abs(float(dense.down.float().std()) * inter**0.5 - 1) < 0.1
    for quant in ("int4", "int3", "fp16"):
        peaks = activation_peaks(c, lambda q=quant: random_layer(c, q, torch.device("cpu"), torch.float32), 2, 16)
        assert len(peaks) == 2 and all(0 < p[name] < 50 for p in peaks for name in ("qkv", "o", "gate_up", "down", "h")), (quant, peaks)  # noqa: E501
