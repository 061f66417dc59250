"""The finish epilogue of the row-accumulating half2 GEMV (kinds "hgemvrf", "hgemvrqf", "hgemvrbf"; session 8).

With split-K, the programs only add their partial sums into the shared workspace (quant_common.red_tile: no arrival
counter, no last program) and a second kernel (quant_common.finish_rows) writes y and clears the workspace. Each case
runs the same config with today's epilogue (quant_common.store_tile) and with the finish epilogue and checks: the
error against the fp32 reference, the difference between the two epilogues (the same partial sums: bit-identical
under the interpreter, whose atomics run in program order; within the atomics' ordering on CUDA), and that the
workspace and the arrival counters are all zero afterwards (the next GEMV sharing them would otherwise be wrong).
On CUDA the cases run in-process; on the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case

# (K, N, M, group, sym, act-order, checkpoint format, block_m, split_k, kind)
FINISH_CASES: dict[str, tuple] = {
    "f-loop-ragged-m1": (640, 40, 1, 128, False, False, "gptq", 1, 2, "hgemvrf"),  # programs of 3 + 2 tiles
    "f-burst-act-m3": (768, 64, 3, 128, False, True, "gptq", 4, 3, "hgemvrbf"),  # M below the row block
    "f-pin-sym-m2": (512, 64, 2, 128, True, False, "gptq_v2", 2, 2, "hgemvrqf"),
    "f-two-row-blocks-m5": (512, 40, 5, 128, False, False, "gptq", 4, 4, "hgemvrf"),  # one tile per program
    "f-nosplit-m1": (384, 64, 1, 128, False, False, "gptq", 1, 1, "hgemvrf"),  # split 1: no finish kernel
}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    from cases import _rel_err  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, g, sym, act, fmt, bm, split, kind = FINISH_CASES[case_id]
    raw, w, x = make_case(case_id, k, n, m, g, sym, act, fmt, device)

    def run(kind: str) -> torch.Tensor:
        y = torch.full((m, n), float("nan"), dtype=torch.float16, device=device)
        launch_quant_matmul(x, w, QMMConfig(bm, 64, 128, split, 2, 1, False, kind), y)
        return y

    def dirty() -> int:
        if device == "cuda":
            torch.cuda.synchronize()
        return sum(int((ws != 0).sum()) + int((cnt != 0).sum()) for ws, cnt in quant_common._WORKSPACES.values())

    y_old = run(kind.removesuffix("f"))
    y, y2 = run(kind), run(kind)
    ref = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, w.zero_offset)
    return dict(err=_rel_err(y, ref), err_old=_rel_err(y_old, ref), shape=list(y.shape), dirty=dirty(),
                old_diff=float((y.float() - y_old.float()).abs().max()),
                repeat_diff=float((y.float() - y2.float()).abs().max()))  # fmt: skip


@pytest.fixture(scope="module")
def finish_case() -> Any:
    return case_runner(__file__, run_case, "finish-epilogue", 600)


@pytest.mark.parametrize("case_id", list(FINISH_CASES))
def test_finish_epilogue_matches_store_tile(case_id: str, finish_case: Any) -> None:
    res = finish_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["shape"] == [FINISH_CASES[case_id][2], FINISH_CASES[case_id][1]]
    assert res["dirty"] == 0, "workspace or arrival counters not left zeroed"
    assert res["err"] < 2e-3, res  # a NaN-filled y that the finish did not overwrite fails here
    assert res["repeat_diff"] < 1e-3, res
    # the same partial sums reduced by the other epilogue: exact in the interpreter (atomics in program order)
    assert res["old_diff"] <= (1e-3 if torch.cuda.is_available() else 0.0), res


def test_finish_kernel_reads_and_clears_with_one_exchange() -> None:
    """The finish kernel built offline for sm_90 (no GPU needed): the workspace is read and cleared only by atomic
    exchanges, never by a plain load followed by a store. The interpreter cannot see the race this guards against:
    Triton gave the load and the clearing store different register layouts, so on the H200 a thread cleared sums
    another thread had not read yet (relative errors 0.1-0.5, workspace clean afterwards)."""
    triton = pytest.importorskip("triton")
    from inlaid_worker.kernels import quant_common
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = quant_common._finish_kernel
    consts = dict(USE_GDC=1, BLOCK=quant_common.FINISH_BLOCK, stride_yn=1)
    sig = {a: "constexpr" if a in consts else {"ws_ptr": "*fp32", "y_ptr": "*fp16"}.get(a, "i32") for a in fn.arg_names}
    src = ASTSource(fn, sig, constexprs=consts, attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ptx"]
    lines = [ln.strip() for ln in ptx.splitlines()]
    assert any("atom.global" in ln and ".exch." in ln for ln in lines), "no atomic exchange"
    assert not any(ln.startswith(("ld.global", "@%p")) and "ld.global" in ln for ln in lines), "plain global load"
    wait = next(i for i, ln in enumerate(lines) if ln.startswith("griddepcontrol.wait"))
    first = next(i for i, ln in enumerate(lines) if "atom.global" in ln or "st.global" in ln)
    assert wait < first, "the workspace and y are touched before the PDL wait"


def test_finish_refuses_swiglu() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 256, dtype=torch.float16), torch.empty(1, 128, dtype=torch.float16)
    act = torch.empty(1, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="separate epilogues"):
        launch_hgemvr(x, w, 1, 64, 128, 2, 2, y, swiglu=act, finish=True)


if __name__ == "__main__":
    main(list(FINISH_CASES), run_case)
