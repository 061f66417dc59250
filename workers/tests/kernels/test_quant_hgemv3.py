"""The 3-bit half2 GEMV (quant_matmul kind "hgemv3") vs the pure-torch reference, and its pair table / PTX constants.

On CUDA the cases run in-process (inline PTX); on the CPU they run once in a subprocess under TRITON_INTERPRET=1
(this file as a script), where the same bit steps run as Triton ops. The shapes cover act-order (perm gather),
odd N (zero points straddling qzeros words), a K tile of 64 (two per group), per-channel groups, a split whose
last program runs past K, and two row blocks.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main

# (K, N, M, group, sym, act-order, checkpoint format, block_k, block_m, split_k[, words' look-ahead]); N = 40 is a
# whole and a ragged column block of 32
CASES: dict[str, tuple] = {
    "ahead2-ragged-m1": (640, 40, 1, 128, False, False, "gptq", 128, 1, 2, 2),  # programs of 3 and 2 tiles
    "ahead2-act-bk64-m3": (512, 40, 3, 128, False, True, "gptq", 64, 4, 2, 2),
    "ahead2-one-tile-per-program-m2": (256, 40, 2, 128, True, False, "gptq", 128, 2, 2, 2),
    "sym-m1": (256, 40, 1, 128, True, False, "gptq", 128, 1, 1),
    "asym-act-m3-past-k": (384, 40, 3, 128, False, True, "gptq", 128, 4, 2),  # 3 tiles: programs of 2 and 1 (+1 spare)
    "asym-oddN-bk64-m2": (256, 51, 2, 128, False, False, "gptq", 64, 2, 1),
    "v2-g64-act-m4": (512, 40, 4, 64, False, True, "gptq_v2", 64, 4, 3),
    "perchannel-m1": (384, 40, 1, -1, True, False, "gptq", 128, 1, 3),
    "two-row-blocks-m5": (256, 40, 5, 128, False, False, "gptq", 128, 4, 1),
}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    """Relative error vs the reference and a repeat's difference (split-K workspace left clean)."""
    from cases import _rel_err, make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import CHECKPOINT_FORMATS, prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, g, sym, act, fmt, bk, bm, split, *ahead = CASES[case_id]
    torch.manual_seed(zlib.crc32(case_id.encode()))
    raw = {name: t.to(device) for name, t in make_gptq(k, n, 3, g, sym, act, CHECKPOINT_FORMATS[fmt]).items()}
    w = prepare_gptq_weight(**raw, bits=3, group_size=g, sym=sym, checkpoint_format=fmt)
    x = torch.randn(m, k, device=device).half()

    def run() -> torch.Tensor:
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(x, w, QMMConfig(bm, 32, bk, split, 1, ahead[0] if ahead else 1, False, "hgemv3"), y)
        return y

    y, y2 = run(), run()
    ref = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 3, w.zero_offset)
    return dict(err=_rel_err(y, ref), repeat_diff=float((y.float() - y2.float()).abs().max()), shape=list(y.shape))


@pytest.fixture(scope="module")
def hgemv3_case() -> Any:
    return case_runner(__file__, run_case, "3-bit half2 GEMV", 300)


@pytest.mark.parametrize("case_id", list(CASES))
def test_hgemv3_matches_reference(case_id: str, hgemv3_case: Any) -> None:
    res = hgemv3_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["shape"] == [CASES[case_id][2], CASES[case_id][1]]
    assert res["err"] < 2e-3, res
    assert res["repeat_diff"] < 1e-3, "split-K workspace was not left clean"


def _f16(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0])


def _funnel(lo: int, hi: int, n: int) -> int:
    """PTX shf.r.clamp.b32: the low word of (hi:lo) >> n."""
    return ((hi << 32 | lo) >> n) & 0xFFFFFFFF


def _prmt(a: int, b: int, sel: int) -> int:
    """PTX prmt.b32 (default mode): byte i of the result is byte (sel >> 4i) & 7 of (b:a)."""
    both = b << 32 | a
    return sum(((both >> (8 * ((sel >> (4 * i)) & 7))) & 0xFF) << (8 * i) for i in range(4))


def test_pair_table_and_ptx_constants_dequantize_every_field_exactly() -> None:
    """The CUDA path's steps in Python integers (funnel shifts, prmt, LOP3 masks, the half2 scales and zero words of
    the PTX): each of the 16 half2 words must be ((q_lo - z)/256, (q_hi - z)/256) for its pair of PAIRS."""
    from inlaid_worker.kernels import quant_hgemv3 as h3

    assert sorted(v for _, _, lo, hi in h3.PAIRS for v in (lo, hi)) == list(range(32))
    assert "0x6532" in h3._DEQ3_PTX.value and "0x3310" in h3._DEQ3_PTX.value
    rng = random.Random(3)
    for _ in range(300):
        q = [rng.randrange(8) for _ in range(32)]
        stream = sum(v << (3 * i) for i, v in enumerate(q))
        w0, w1, w2 = (stream >> (32 * i) & 0xFFFFFFFF for i in range(3))
        src = dict(u8=_funnel(w0, w1, 8), w1=w1, u56=_funnel(w1, w2, 24), u80=_funnel(w2, w0, 16),
                   uc1=_prmt(w0, w1, 0x6532), uc2=_prmt(w2, w2, 0x3310))  # fmt: skip
        z = rng.randrange(9)
        for name, kind, lo, hi in h3.PAIRS:
            a = (src[name] & h3._mask(kind)) | 0x64006400
            c = (z * h3._MUL[kind] + h3._BASE[kind]) & 0xFFFFFFFF
            k = h3._scale(kind)
            got = (_f16(a) * _f16(k) + _f16(c), _f16(a >> 16) * _f16(k >> 16) + _f16(c >> 16))
            assert got == ((q[lo] - z) / 256, (q[hi] - z) / 256), (name, kind, lo, hi, z)
    # the x pairs: prmt of the natural (x[2i], x[2i+1]) words gives (x[lo], x[hi])
    words = [(2 * i) | (2 * i + 1) << 16 for i in range(16)]
    for _, _, lo, hi in h3.PAIRS:
        assert _prmt(words[lo // 2], words[hi // 2], h3._pair_selector(lo, hi)) == lo | hi << 16


def test_hgemv3_is_offered_for_3bit_fp16_up_to_m4_only() -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    def n3(m: int, bits: int = 3, dtype: torch.dtype = torch.float16) -> int:
        return sum(c.kind == "hgemv3" for c in candidate_configs(m, 11008, 4096, 128, bits, dtype))

    assert n3(1) > 0 and n3(2) > 0 and n3(4) > 0
    assert n3(8) == 0 and n3(1, bits=4) == 0 and n3(1, dtype=torch.bfloat16) == 0
    assert {c.block_m for c in candidate_configs(3, 4096, 4096, 128, 3) if c.kind == "hgemv3"} == {4}


def test_hgemv3_rejects_4bit_weights_and_bf16() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemv3 import launch_hgemv3

    w4 = prepare_gptq_weight(**make_gptq(256, 16, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    w3 = prepare_gptq_weight(**make_gptq(256, 16, 3, 128, False, False, 1), bits=3, group_size=128, sym=False)
    y = torch.empty(1, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="3-bit"):
        launch_hgemv3(torch.zeros(1, 256, dtype=torch.float16), w4, 1, 32, 128, 1, 1, 1, y)
    with pytest.raises(ValueError, match="fp16"):
        launch_hgemv3(torch.zeros(1, 256, dtype=torch.bfloat16), w3, 1, 32, 128, 1, 1, 1, y)
    with pytest.raises(ValueError, match="look-ahead"):
        launch_hgemv3(torch.zeros(1, 256, dtype=torch.float16), w3, 1, 32, 128, 1, 1, 3, y)
    with pytest.raises(ValueError, match="block_k"):
        launch_hgemv3(torch.zeros(1, 256, dtype=torch.float16), w3, 1, 32, 48, 1, 1, 1, y)


if __name__ == "__main__":
    main(list(CASES), run_case)
