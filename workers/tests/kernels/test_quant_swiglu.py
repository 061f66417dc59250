"""SwiGLU in the gate/up GEMV's epilogue (kernels.quant_swiglu + swiglu_epilogue, the "swiglu" decode fusion) vs
the torch reference and vs the two launches it replaces (the same GEMV config, then silu_mul).

The fused path must give silu_mul's result bit for bit on the CPU (the interpreter runs programs in order, so the
split-K sums are the same), within fp16 rounding on CUDA (atomics may add the partials in another order); it must
leave the split-K workspace and the pair counters at zero (the next launch and CUDA graphs rely on it), and fall
back to the two launches where it cannot fuse. On CUDA in-process; on the CPU once in a subprocess under
TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case

# (K, I, M, act-order, kind, block_m, split_k, fused expected)
SWIGLU_CASES: dict[str, tuple] = {
    "s-hgemvr-split2-m1": (512, 128, 1, False, "hgemvr", 1, 2, True),  # I = 128: two gate/up tile pairs
    "s-hgemvrb-act-split3-m2": (768, 64, 2, True, "hgemvrb", 2, 3, True),
    "s-hgemvrq-nosplit-m1": (384, 64, 1, False, "hgemvrq", 1, 1, True),
    "s-hgemvr-two-row-blocks-m3": (256, 64, 3, False, "hgemvr", 2, 2, True),  # one K tile per program
    "s-fallback-tile-m1": (256, 96, 1, False, "hgemvr", 1, 2, False),  # I = 96: no whole 64-column tiles
    "s-fallback-kind-m2": (512, 128, 2, False, "hgemv", 2, 2, False),
}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    from cases import _rel_err  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_swiglu import fused_ok, gemv_swiglu, gemv_swiglu_reference
    from inlaid_worker.kernels.silu_mul import silu_mul

    k, inter, m, act, kind, bm, split, _ = SWIGLU_CASES[case_id]
    raw, w, x = make_case(case_id, k, 2 * inter, m, 128, False, act, "gptq", device)
    x = x * 4  # gate values around +-10: silu's both tails
    cfg = QMMConfig(bm, 64, 128, split, 2, 1, False, kind)
    got = gemv_swiglu(x, w, cfg)
    again = gemv_swiglu(x, w, cfg)
    y = torch.empty(m, 2 * inter, dtype=torch.float16, device=device)
    launch_quant_matmul(x, w, cfg, y)
    two = silu_mul(y)
    ref = gemv_swiglu_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, w.zero_offset)
    ws, cnt = quant_common._WORKSPACES[x.device]
    top = float(two.float().abs().max())  # differences relative to the largest output
    return dict(err=_rel_err(got, ref), shape=list(got.shape), fused=fused_ok(x, w, cfg),
                repeat_diff=float((got.float() - again.float()).abs().max()) / top,
                two_launch_diff=float((got.float() - two.float()).abs().max()) / top,
                dirty=int((ws != 0).sum()) + int((cnt != 0).sum()))  # fmt: skip


@pytest.fixture(scope="module")
def swiglu_case() -> Any:
    return case_runner(__file__, run_case, "gate/up SwiGLU", 900)


@pytest.mark.parametrize("case_id", list(SWIGLU_CASES))
def test_fused_swiglu_matches_two_launches_and_reference(case_id: str, swiglu_case: Any) -> None:
    k, inter, m, *_, fused = SWIGLU_CASES[case_id]
    res = swiglu_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["shape"] == [m, inter] and res["fused"] == fused, res
    assert res["err"] < 3e-3, res
    assert res["dirty"] == 0, "split-K workspace or pair counters not left at zero"
    # bit-identical where the partial sums meet in one order (the interpreter); on CUDA the atomics' order may
    # move a sum by one fp16 ulp (2^-10 relative), which silu(g) * u carries through: a few ulps of the largest
    assert res["repeat_diff"] < (4e-3 if torch.cuda.is_available() else 1e-9), res
    assert res["two_launch_diff"] < (4e-3 if torch.cuda.is_available() else 1e-9), res


def test_fused_ok_needs_the_row_gemv_whole_tiles_and_fp16() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_swiglu import fused_ok

    w = prepare_gptq_weight(**make_gptq(256, 256, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x = torch.zeros(1, 256, dtype=torch.float16)
    cfg = QMMConfig(1, 64, 128, 2, 2, 1, False, "hgemvr")
    assert fused_ok(x, w, cfg)
    assert not fused_ok(x.bfloat16(), w, cfg)
    assert not fused_ok(x, w, QMMConfig(1, 64, 128, 2, 4, 1, True, "tc"))
    assert not fused_ok(x, w, QMMConfig(1, 256, 128, 2, 8, 1, False, "hgemvr"))  # I = 128: half a tile


def test_gemv_swiglu_checks_its_arguments() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_swiglu import gemv_swiglu

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    with pytest.raises(ValueError, match="gate/up"):
        gemv_swiglu(torch.zeros(1, 128, dtype=torch.float16), w)
    with pytest.raises(ValueError, match="fp16 or bf16"):
        gemv_swiglu(torch.zeros(1, 256), w)
    assert gemv_swiglu(torch.zeros(0, 256, dtype=torch.float16), w).shape == (0, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_with_the_swiglu_fusion_match_unfused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the tuner's 7B picks: the row GEMV for gate/up at buckets 1-2, the
    tensor-core GEMV at 4): decode graphs with "swiglu" / "merge+swiglu" give "none"'s logits and KV cache, with the
    fused launch taken at buckets 1 and 2, switching fusions back and forth."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_swiglu

    fused: list[int] = []
    real = quant_swiglu.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> None:
        fused.append(int(args[0].shape[0]) if kw.get("swiglu") is not None else -1)
        real(*args, **kw)

    monkeypatch.setattr(quant_swiglu, "launch_hgemvr", spy)
    runner, _, shape = ph.random_7b_runner(tmp_path, 4)
    ph.fusions_match_unfused(runner, shape.vocab, ("none", "swiglu", "merge+swiglu", "none", "swiglu"))
    assert set(fused) == {1, 2}, fused  # fused at buckets 1-2 only (bucket 4: tensor-core GEMV, two launches)
    assert runner.graph_captures == 9  # 3 buckets x 3 fusions, kept across switches
    from inlaid_worker.model.decode_graphs import AUTO, policy_fusion

    runner.decode_fusion = AUTO  # the per-bucket default: bucket 1's policy fusion, its graph if already captured
    runner.execute(ph.engine_module("steps").make_step(1, 1, 100, [-1], shape.vocab, 256))
    known = policy_fusion(1) in ("none", "swiglu", "merge+swiglu")
    assert runner.graph_captures == 9 + (not known)


if __name__ == "__main__":
    main(list(SWIGLU_CASES), run_case)
