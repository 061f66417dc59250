"""Programmatic Dependent Launch (kernels.pdl) in the multi-LoRA kernels (lora_fused), the 3-bit half2 GEMV
(quant_hgemv3) and the Gluon tensor-core GEMVs (quant_tcg, kinds tc / tc2 / tcf2 and 3-bit tc).

CPU: under TRITON_INTERPRET=1 in a subprocess (this file as a script), lora_apply_fused (decode BGMV rows as the
decode graphs stage them, padding rows, a multi-tile K walk per program, rank 64 so the expand walks several rank
blocks, and the SGMV tiles) and the 3-bit GEMV (look-ahead 1 and 2, ragged splits) with USE_GDC 1, 2, 3 give
exactly what USE_GDC 0 gives (the interpreter skips griddepcontrol, so this checks the reordered loads; the BGMV
cases, at most 16 rows, take lora_fused's split-K partials, SGMV its atomics); the
Gluon kernel (never interpreted) is built offline for sm_90 per mode: one griddepcontrol.wait in modes 1-3 and
none in 0, after the first word loads in modes 1 / 2 and before them in 3, launch_dependents at the start (1, 3)
or after the K loop (2).
CUDA (compute capability >= 9): a CUDA-graph chain of tensor-core / 3-bit GEMVs with add+RMSNorm / SwiGLU between
them in modes 0-3; and decode steps with rank-16 q/k/v/o adapters (and without) of a 2-layer Llama-7B-shaped int4
runner through the decode graphs at buckets 1, 2, 4 and 8 (half2 GEMVs, then the tensor-core ones), every mode,
switching back and forth: logits and KV cache as in mode 0.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import pdl_helpers as ph
import pytest
import torch
from lora_pools import lora_inputs

CUDA = torch.cuda.is_available()

# LoRA cases: (rows' adapter slots, K, output widths (q, k, v), rank, block_m, decode-graph staging)
LORA_CASES: dict[str, tuple] = {
    "bgmv-graph-rows-r16": ([1, 0, -1, 2], 256, (64, 32, 32), 16, 1, True),  # padding row: slot 0, no rows
    "bgmv-r64-rank-blocks": ([0, -1, 1], 384, (96, 40, 40), 64, 1, False),  # expand: 4 rank blocks of 16
    "bgmv-k-walk": ([0, 1, 2, 1], 768, (32, 16, 16), 64, 1, False),  # 2 K tiles/program (program budget below)
    "sgmv-block16": ([0] * 17 + [1] * 3, 256, (48, 32, 32), 16, 16, False),
}
# lora_fused.SPLIT_PROGRAMS per case (default: the shipped 2048): a K walk of 2 tiles at 2048 programs takes ~2000
# programs x 2 tiles x 4 modes (45 s interpreted); 72 gives the same walk with 4 rows x 6 tiles
PROGRAM_BUDGET = {"bgmv-k-walk": 72}
# 3-bit GEMV cases: (K, N, M, split, look-ahead)
HGEMV3_CASES: dict[str, tuple] = {
    "hgemv3-ahead1-m1": (512, 64, 1, 2, 1),
    "hgemv3-ahead2-ragged-m3": (640, 40, 3, 2, 2),  # programs of 3 and 2 tiles
    "hgemv3-ahead2-m2-split1": (384, 64, 2, 1, 2),
}


def _lora_case(case_id: str, device: str) -> list[torch.Tensor]:
    from inlaid_worker.kernels import lora_fused
    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference

    ids, k, widths, rank, block_m, graph_rows = LORA_CASES[case_id]
    lora_fused.SPLIT_PROGRAMS = PROGRAM_BUDGET.get(case_id, 2048)
    pools, x, y0, batch = lora_inputs(ids, k, widths, rank, graph_rows, device, zlib.crc32(case_id.encode()), False,
                                      block_m)  # fmt: skip
    cols = [0, widths[0], widths[0] + widths[1]]
    y = y0.clone()
    lora_apply_fused(y, x, pools, cols, batch)
    ref = lora_fused_reference(y0, x, pools, cols, torch.tensor(ids, device=device))
    return [y, (y.float() - ref.float()).abs().max().reshape(1)]  # the last: error vs the reference


def _hgemv3_case(case_id: str, device: str) -> list[torch.Tensor]:
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, split, ahead = HGEMV3_CASES[case_id]
    _, w = ph.gptq_weight(case_id, k, n, 3, device)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).half().to(device)
    y = torch.empty(m, n, dtype=torch.float16, device=device)
    launch_quant_matmul(x, w, QMMConfig(m if m <= 2 else 4, 32, 128, split, 1, ahead, False, "hgemv3"), y)
    return [y]


def run_case(case_id: str, device: str) -> dict[str, Any]:
    """Outputs with USE_GDC 1, 2, 3 (forced through kernels.pdl's mode) vs USE_GDC 0: max |diff|."""
    outs, res = ph.run_modes(lambda: (_lora_case if case_id in LORA_CASES else _hgemv3_case)(case_id, device))
    return dict(res, err=float(outs[0][-1].max()) if case_id in LORA_CASES else 0.0)


@pytest.fixture(scope="module")
def pdl_case() -> Any:
    return ph.interpreted_cases(__file__)


@pytest.mark.skipif(CUDA, reason="interpreter check of the code paths; on CUDA the graph tests below cover them")
@pytest.mark.parametrize("case_id", [*LORA_CASES, *HGEMV3_CASES])
def test_pdl_code_paths_match_the_plain_kernels(case_id: str, pdl_case: Any) -> None:
    res = pdl_case(case_id)
    ph.assert_same_as_mode0(res)
    assert res["err"] < 1e-3, res  # LoRA: mode 0 vs lora_fused_reference (fp32 on the CPU)


def test_lora_cases_check_what_they_claim() -> None:
    """The cases reach the paths they name (split-K walks of 2 tiles, several rank blocks, SGMV tiles)."""
    import triton
    from inlaid_worker.kernels import lora_fused

    assert lora_fused.SPLIT_PROGRAMS == 2048, "the shipped budget (the cases run with it unless PROGRAM_BUDGET says)"
    ids, k, _, rank, _, _ = LORA_CASES["bgmv-k-walk"]
    nb, k_tiles = len(ids), triton.cdiv(k, 128)
    split = max(1, min(k_tiles, PROGRAM_BUDGET["bgmv-k-walk"] // (nb * triton.cdiv(rank, 32) * 3)))
    assert split > 1 and triton.cdiv(k_tiles, split) == 2, "split-K with a walk of 2 K tiles per program"
    assert LORA_CASES["bgmv-r64-rank-blocks"][3] // 16 == 4


# --------------------------------------------------------------------- Gluon kernel, built offline for sm_90


def _tcg_ptx(gdc: int, depth: int, nsub: int, bits: int) -> str:
    import triton
    from inlaid_worker.kernels import quant_tcg
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    ptrs = dict(x_ptr="*fp16", qw_ptr="*i32", sc_ptr="*fp16", qz_ptr="*i32", perm_ptr="*i32", y_ptr="*fp16",
                ws_ptr="*fp32", cnt_ptr="*i32")  # fmt: skip
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=bits == 3, USE_SPLIT=True, IS_BF16=False,
                  FULL_DEQUANT=False, DEPTH=depth if depth <= 2 else 0, NSUB=nsub, STAGES=depth if depth > 2 else 0,
                  BLOCK_M=8, BLOCK_N=64, BLOCK_K=128, BITS=bits, **quant_tcg.tcg_layouts(64, 8, 4), USE_GDC=gdc)  # fmt: skip
    fn = quant_tcg._tcg_kernel
    sig = {a: "constexpr" if a in consts else ptrs.get(a, "i32") for a in fn.arg_names}
    ck = triton.compile(GluonASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=4, launch_pdl=gdc > 0))  # fmt: skip
    return ck.asm["ptx"]


@pytest.mark.parametrize("depth,nsub,bits", [(1, 1, 4), (4, 2, 4), (4, 1, 3)])
def test_tcg_griddepcontrol_placement(depth: int, nsub: int, bits: int) -> None:
    """Words (ld.global / cp.async of the first tiles) may load before the wait; x (16-bit loads) only after."""
    try:
        ptx = {m: _tcg_ptx(m, depth, nsub, bits) for m in (0, 1, 2, 3)}
    except Exception as exc:  # noqa: BLE001 - no sm_90 toolchain here
        pytest.skip(f"offline sm_90 build unavailable: {exc!r}"[:300])
    assert "griddepcontrol" not in ptx[0]
    for mode in (1, 2, 3):
        text = ptx[mode]
        assert text.count("griddepcontrol.wait") == 1 and text.count("griddepcontrol.launch_dependents") == 1, mode
        wait = text.index("griddepcontrol.wait")
        launch = text.index("griddepcontrol.launch_dependents")
        words = min(i for i in (text.find("cp.async.cg"), text.find("cp.async.ca"), text.find("ld.global.b32"),
                                text.find("ld.global.v4.b32"), text.find("ld.global.u32")) if i >= 0)  # fmt: skip
        first_x = re.search(r"ld\.global(\.\w+)*\.b16", text)
        assert first_x is not None and wait < first_x.start(), mode
        assert (words < wait) == (mode != 3), (mode, words, wait)
        assert (launch < wait) == (mode != 2), mode  # mode 2: after the K loop


# ---------------------------------------------------------------------------------------------- CUDA graphs


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
@pytest.mark.parametrize("m,bits", [(8, 4), (16, 4), (8, 3), (1, 3)])
def test_graph_tensor_core_chain_with_pdl_matches_plain(m: int, bits: int) -> None:
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.silu_mul import silu_mul

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    k = 1024
    if bits == 3 and m == 1:
        kinds = [("hgemv3", 4 * k, k, 4, 1), ("hgemv3", k, 2 * k, 8, 2), ("hgemv3", k, k, 8, 1)]
    elif bits == 3:
        kinds = [("tc", 4 * k, k, 4, 4), ("tc", k, 2 * k, 8, 1), ("tcf", k, k, 2, 4)]
    else:  # (kind, N, K, split, depth): the 7B picks' kinds at M = 4..32, N = 4K feeds silu_mul
        kinds = [("tc2", 4 * k, k, 4, 4), ("tc", k, 2 * k, 8, 1), ("tcf2", k, k, 4, 4), ("tc2", 4 * k, k, 2, 2),
                 ("tc", k, 2 * k, 1, 1), ("tc", k, k, 8, 1)]  # fmt: skip
    ws_list = []
    for i, (kind, n, kk, split, depth) in enumerate(kinds):
        bm = 1 if kind == "hgemv3" else m
        ws_list.append((ph.gptq_weight(f"tc{i}-{bits}", kk, n, bits, "cuda")[1],
                        QMMConfig(bm, 64, 128, split, 2 if kind == "hgemv3" else 4, depth, False, kind)))  # fmt: skip
    x = torch.randn(m, k, device="cuda").half()
    norm_w = torch.rand(k, device="cuda").half() + 0.5

    def chain() -> torch.Tensor:
        h, cur = x.clone(), x
        for w, cfg in ws_list:
            y = torch.empty(cur.shape[0], w.out_features, dtype=torch.float16, device="cuda")
            launch_quant_matmul(cur, w, cfg, y)
            cur = silu_mul(y) if w.out_features == 4 * k else add_rms_norm(y, norm_w, 1e-5, residual=h)
        return cur

    ph.graph_replays_match_mode0(chain)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
def test_decode_graph_steps_with_lora_and_pdl_match_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner with 4 rank-16 q/k/v/o adapters: decode steps (with and without
    adapters) through the decode graphs in every PDL mode give mode 0's logits and KV cache."""
    from inlaid_worker.kernels import pdl

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    monkeypatch.setenv("INLAID_PDL_MAX_BUCKET", "256")  # every bucket and LoRA with PDL (the policy may be narrower)
    monkeypatch.setenv("INLAID_PDL_LORA", "1")
    steps_mod = ph.engine_module("steps")
    runner, rm, shape = ph.random_7b_runner(tmp_path, 8)
    slots = steps_mod.load_adapters(runner, 16, rm.TARGETS["qkvo"], 4, "pdl")
    kv0 = torch.randn_like(runner.kv_cache) * 0.3
    for batch, lora in ((1, True), (2, True), (3, True), (8, True), (8, False)):
        ids = [slots[i % 4] if lora and i != 1 else -1 for i in range(batch)]  # row 1: base model
        step = steps_mod.make_step(batch, 1, 100, ids, shape.vocab, 256)
        ph.decode_steps_match_mode0(runner, step, kv0, (batch, lora))
    assert runner.decode_pdl == 1 and runner.graph_captures == 5 * 4


def main() -> None:
    ph.print_case_results([*LORA_CASES, *HGEMV3_CASES], run_case)


if __name__ == "__main__":
    main()
