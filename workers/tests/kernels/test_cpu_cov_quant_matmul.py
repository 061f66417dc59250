"""CPU coverage (issue 4) of quant_matmul's kernels where the other CPU tests leave gaps (docs/kernel-tests.md):

- bf16 x through every tl.dot kernel: the "tile" kernel (_qmm_kernel), quant_mma (_mma_kernel; "dequant":
  _dequant_kernel), quant_tc (_tc_kernel, the twin of the Gluon kinds tc / tc2 / tcf2). Triton 3.6's interpreter
  computes bf16 on raw bits; here (as in test_quant_matmul.py, through cases.py) they run under the interpreter
  with bf16 arithmetic patched in (cpu_cov_bf16.patch_bf16, itself checked against torch's bf16), against
  quant_matmul_reference (the pure-torch dequantized product), and the same case without the patch must run and be
  far off (so the check can fail);
- the dispatcher's interpreter twins of the Gluon kinds no CPU test runs through quant_matmul: tcsxk / tcsxks (quant_tc
  "tc"), tcsat, tcl / tcls, tcv, tcsx2, fp16 and bf16;
- "tcw" / "tcwn": offered by the tuner at M >= 129 on any machine; under the interpreter launch_quant_matmul runs
  their twin, quant_tc "tcf" (quant_tcw's docstring; launch_tcw_kind), checked here against the reference (CPU only:
  on sm_90 test_quant_tcw.py runs the Gluon kernel itself).

On CUDA the same cases run in-process (the Gluon kinds on sm_90 only). On the CPU: one subprocess, this file as a
script (~10 s).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_cov_bf16  # noqa: E402
from cases import ON_SM90  # noqa: E402

CUDA = torch.cuda.is_available()

CASES: dict[str, dict[str, Any]] = {
    # bf16 through the tl.dot kernels (test_quant_matmul.py's bf16 cases overlap some: docs/kernel-tests.md)
    "bf16-tile-b4-act-m17": dict(bits=4, sym=False, act=True, m=17, kind="tile", dtype="bf16"),
    "bf16-tile-b3-sym-m8": dict(bits=3, sym=True, act=False, m=8, kind="tile", dtype="bf16"),
    "bf16-tile-b4-split2-m5": dict(bits=4, sym=False, act=False, m=5, kind="tile", dtype="bf16", k=512, split=2),
    "bf16-mma-b4-act-m16": dict(bits=4, sym=False, act=True, m=16, kind="mma", dtype="bf16"),
    "bf16-mma-b4-v2-split2-m3": dict(
        bits=4, sym=False, act=False, m=3, kind="mma", dtype="bf16", fmt="gptq_v2", split=2
    ),
    "bf16-dequant-b4-m9": dict(bits=4, sym=False, act=True, m=9, kind="dequant", dtype="bf16"),
    "bf16-dequant-b3-m9": dict(bits=3, sym=True, act=False, m=9, kind="dequant", dtype="bf16"),
    "bf16-tc-b4-m16": dict(bits=4, sym=False, act=True, m=16, kind="tc", dtype="bf16"),
    "bf16-tc-b4-perchannel-split2-m8": dict(
        bits=4, sym=True, act=False, m=8, kind="tc", dtype="bf16", g=-1, k=512, split=2
    ),
    "bf16-tc2-b4-m33": dict(bits=4, sym=False, act=False, m=33, kind="tc2", dtype="bf16"),
    "bf16-tcf2-b4-act-split2-m130": dict(bits=4, sym=True, act=True, m=130, kind="tcf2", dtype="bf16", split=2),
    # the dispatcher's twins of the Gluon kinds no other CPU test takes through quant_matmul
    "twin-tcsxk-m129": dict(bits=4, sym=False, act=True, m=129, kind="tcsxk"),
    "twin-tcsxks-bf16-m200": dict(bits=4, sym=False, act=False, m=200, kind="tcsxks", dtype="bf16", k=512),
    "twin-tcsat-m8": dict(bits=4, sym=False, act=False, m=8, kind="tcsat", n=64),
    "twin-tcs2a-bf16-m4": dict(bits=4, sym=True, act=True, m=4, kind="tcs2a", dtype="bf16"),
    "twin-tcsx2-bf16-m40": dict(bits=4, sym=False, act=True, m=40, kind="tcsx2", dtype="bf16"),
    "twin-tcl-b3-m40": dict(bits=3, sym=False, act=True, m=40, kind="tcl"),
    "twin-tcls-bf16-m64": dict(bits=4, sym=False, act=False, m=64, kind="tcls", dtype="bf16"),
    "twin-tcv-m8": dict(bits=4, sym=False, act=True, m=8, kind="tcv", n=64),
    "twin-tcv-bf16-m2": dict(bits=4, sym=True, act=False, m=2, kind="tcv", dtype="bf16", n=64),
    # tcw / tcwn (bucket 256: block_m 256 / 128, block_n 128 > N = 40 / 64): launch_tcw_kind's twin, CPU only
    "twin-tcw-m129": dict(bits=4, sym=False, act=True, m=129, kind="tcw"),
    "twin-tcw-split2-m130": dict(bits=4, sym=True, act=False, m=130, kind="tcw", k=512, split=2),
    "twin-tcwn-bf16-m200": dict(bits=4, sym=False, act=True, m=200, kind="tcwn", dtype="bf16", k=512, n=64),
}
UNPATCHED = ("bf16-tile-b4-act-m17",)  # run first, on the stock interpreter: must be far off
GLUON_KINDS = ("tc", "tc2", "tcf2", "tcsxk", "tcsxks", "tcsat", "tcs2a", "tcsx2", "tcl", "tcls", "tcv")
TCW_CASES = [c for c, p in CASES.items() if p["kind"] in ("tcw", "tcwn")]


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    from cases import run_qmm  # type: ignore[import-not-found]

    torch.manual_seed(zlib.crc32(case_id.encode()))
    return run_qmm(CASES[case_id], device)


def _params() -> list[Any]:
    gpu_skip = pytest.mark.skipif(CUDA and not ON_SM90, reason="Gluon kinds: sm_90 only on CUDA")
    return [
        pytest.param(c, marks=gpu_skip) if p["kind"] in GLUON_KINDS else c
        for c, p in CASES.items()
        if c not in TCW_CASES
    ]


@pytest.fixture(scope="module")
def qmm_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the interpreter's bf16 patch: CPU only")
def test_the_bf16_patch_matches_torch_bf16(qmm_case: Any) -> None:
    res = qmm_case("patch_check")
    assert res["dot"] < 1e-4, res  # fp32 summation order
    exact = ("add", "sub", "mul", "div", "fma", "max", "exp", "gt", "up", "f16", "i32", "fp8e5", "fp8e4", "rtz", "sum",
             "sum_all", "rmax", "scan")  # fmt: skip
    assert set(res) == {"dot", *exact}, sorted(res)
    assert all(res[k] == 0.0 for k in exact), res


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(qmm_case: Any) -> None:
    """Why the bf16 cases need patch_bf16 on the CPU, and that they can fail: the stock interpreter runs the case
    without an error and comes out far off (~1e9)."""
    cpu_cov_bf16.assert_far_off(qmm_case(f"unpatched:{UNPATCHED[0]}"))


@pytest.mark.parametrize("case_id", _params())
def test_kernel_matches_the_dequantized_product(case_id: str, qmm_case: Any) -> None:
    res = qmm_case(case_id)
    p = CASES[case_id]
    tol = cpu_cov_bf16.bf16_tol(exact=p["kind"] in ("tile", "mma")) if p.get("dtype") == "bf16" else 2e-3
    cpu_cov_bf16.assert_within(res, tol)
    assert res["repeat_diff"] < 1e-3, "split-K workspace was not left clean"


@pytest.mark.skipif(CUDA, reason="on CUDA (sm_90) test_quant_tcw.py runs the Gluon kernel itself")
@pytest.mark.parametrize("case_id", TCW_CASES)
def test_tcw_through_the_dispatcher_matches_the_reference_on_the_cpu(case_id: str, qmm_case: Any) -> None:
    """The tuner offers "tcw" / "tcwn" at M >= 129 on any machine (quant_matmul_config); through quant_matmul under the
    interpreter they run their twin (quant_tc "tcf": launch_quant_matmul -> launch_tcw_kind) and give the dequantized
    product (before: the Gluon kernel was launched and the interpreter found no driver)."""
    res = qmm_case(case_id)
    cpu_cov_bf16.assert_within(res, cpu_cov_bf16.bf16_tol() if CASES[case_id].get("dtype") == "bf16" else 2e-3)
    assert res["repeat_diff"] < 1e-3, "split-K workspace was not left clean"


def test_tcw_kinds_are_quant_tcws() -> None:
    """quant_matmul routes exactly quant_tcw's kinds (its TCW_KINDS) through launch_tcw_kind."""
    from inlaid_worker.kernels import quant_matmul, quant_tcw

    assert set(quant_matmul.TCW_KINDS) == set(quant_tcw.KINDS)


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
