"""The LoRA shrink ahead of the base GEMV (kernels.lora_early, session 19): where EARLY places it, that the decode
body launches shrink / GEMV / expand in that order and gives the shipped order's logits, and (CUDA) that a PDL graph
with the shrink before the GEMV or on a forked branch reads x only after its writer and has the intended topology.

CPU: the placement rule; a tiny model's bucket-4 decode-graph body (per-row blocks, split-K partials) under
TRITON_INTERPRET=1 in a subprocess with EARLY off / before / fork (no streams on the CPU: fork runs as before): the
launch order of every LoRA call, its host setup built once (also in an eager step), and logits equal to EARLY off's.
CUDA (compute capability >= 9): a graph under kernels.pdl mode 1 of a slow x-writer (one program that lets dependents
launch at once, spins, then writes x), the shrink (placed by EARLY), a GEMV stand-in (another slow kernel writing the
base output y) and the expand; x and y are clobbered and x's source changed before each replay: the output must
equal lora_fused_reference on the new x, and the graph's DOT dump must show the shrink's and expand's parents the mode
names (fork: the shrink's only parent is the writer, the expand joins the stand-in and the shrink).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest
import torch
from factories import interpreted_json, make_tiny_llama
from inlaid_worker.kernels import lora_early
from inlaid_worker.kernels.lora_early import place

CUDA = torch.cuda.is_available()
SHIPPED = ["before", "off", "fork", "fork", "fork", "fork"]  # lora_early.POLICY at 1, 2, 3, 4, 8, 16 row blocks


def test_placement_rule() -> None:
    assert place("off", True, True) == "off"
    for mode in ("before", "fork"):
        assert place(mode, False, True) == "off"  # no partials (over 16 blocks, SGMV, one K split): unchanged
    assert place("before", True, True) == "before" and place("before", True, False) == "before"
    assert place("fork", True, True) == "fork"
    assert place("fork", True, False) == "before"  # no CUDA streams: the same kernels on one stream
    for gone in ("after", "fork-plain"):  # (fork-plain: the bench-only variant removed after session 19's run)
        with pytest.raises(ValueError, match="EARLY"):
            place(gone, True, True)


def test_shipped_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """EARLY None: POLICY by row blocks inside captures (bench/results/decode-2026-12-01-s19-lora-fork.md), off above
    16 blocks and for eager steps; a set EARLY forces its mode everywhere."""
    assert lora_early.EARLY is None
    assert [lora_early.mode_for(n, True) for n in (1, 2, 3, 4, 8, 16, 17, 32)] == [*SHIPPED, "off", "off"]
    assert {lora_early.mode_for(n, False) for n in (1, 2, 4, 16)} == {"off"}
    monkeypatch.setattr(lora_early, "EARLY", "fork")
    assert lora_early.mode_for(1, False) == lora_early.mode_for(64, True) == "fork"
    monkeypatch.setattr(lora_early, "EARLY", "later")
    with pytest.raises(ValueError, match="EARLY"):
        lora_early.mode_for(1, True)


SCRIPT = r"""
import json, sys, torch
sys.path[:0] = [TESTS, TESTS + "/kernels"]
import lora_decode_body
lora_decode_body.setup()
from inlaid_worker.kernels import lora_early, lora_fused
from inlaid_worker.model import llama_fast

targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
b = lora_decode_body.LoraBody.make(MODEL, [(8, targets), (4, targets)], [0, 1, -1])
log = []
spy = lambda name, fn: lambda *a, **k: (log.append(name), fn(*a, **k))[1]
lora_fused.launch_shrink = spy("s", lora_fused.launch_shrink)
lora_fused.launch_expand = spy("e", lora_fused.launch_expand)
llama_fast.linear = spy("g", llama_fast.linear)
lora_fused.segment_args = spy("A", lora_fused.segment_args)  # the host setup of one LoRA call
lora_fused.shrink_plan = spy("P", lora_fused.shrink_plan)
out, order = {}, {}
for mode in ("off", "before", "fork", None):  # None: the shipped policy, which keeps eager steps "off"
    lora_early.EARLY = mode
    log.clear()
    out[str(mode)] = b.body() if mode else b.eager()[:3]
    order[str(mode)] = "".join(log)
print(json.dumps(dict(order=order, before=float((out["before"] - out["off"]).abs().max()),
                      fork=float((out["fork"] - out["off"]).abs().max()), finite=bool(torch.isfinite(out["off"]).all()),
                      eager=float((out["None"] - out["off"]).norm() / out["off"].norm()))))
"""


@pytest.mark.skipif(CUDA, reason="interpreter check; on CUDA the graph test below")
def test_decode_body_issues_the_shrink_before_the_gemv(tmp_path: Path) -> None:
    """Bucket 4 (3 rows: adapters 0 and 1 and a base row, a padding row), all 7 linears adapted, 1 layer of hidden 256
    (2 K tiles: the shrink splits K, so the plan takes the partials): per linear of the layer, "off" runs GEMV,
    shrink, expand; "before" / "fork" shrink, GEMV, expand; the logits are bit-equal (the same kernels). Each LoRA call
    builds its host setup (lora_fused.segment_args, shrink_plan) once, also in an eager step under the shipped policy
    ("off" there: decided before any setup; it was built twice, by shrink_ahead and again by add_fused)."""
    model = make_tiny_llama(tmp_path / "m", hidden=256, intermediate=256, layers=1)
    tests = str(Path(__file__).resolve().parents[1])
    res = interpreted_json(f"TESTS = {tests!r}\nMODEL = {str(model)!r}\n" + SCRIPT, timeout=240)
    # 4 LoRA calls in the layer (q/k/v fused, o, gate/up fused, down); the LM head is not a llama_fast.linear
    assert res["order"]["off"] == res["order"]["None"] == "gAPse" * 4, res
    assert res["order"]["before"] == res["order"]["fork"] == "APsge" * 4, res
    assert res["finite"] and res["before"] == 0.0 and res["fork"] == 0.0, res
    assert res["eager"] < 1e-4, res  # the eager step: the body's logits


# ---------------------------------------------------------------------------------------------- CUDA graphs

if CUDA:
    import triton
    import triton.language as tl
    from inlaid_worker.kernels.pdl import gdc_enter

    @triton.jit
    def _slow_copy(src, dst, n, iters, USE_GDC: tl.constexpr, BLOCK: tl.constexpr):
        gdc_enter(USE_GDC)
        offs = tl.arange(0, BLOCK)
        v = tl.load(src + offs, mask=offs < n, other=0.0).to(tl.float32)
        acc = tl.sum(v, axis=0) * 0.0
        for _ in range(iters):
            acc = acc * 1.0000001 + 1e-30
        tl.store(dst + offs, (v + acc * 0.0).to(dst.dtype.element_ty), mask=offs < n)

    @triton.jit
    def _writer(src, dst, n, iters, USE_GDC: tl.constexpr, BLOCK: tl.constexpr):
        _slow_copy(src, dst, n, iters, USE_GDC, BLOCK)

    @triton.jit
    def _gemv_stand_in(src, dst, n, iters, USE_GDC: tl.constexpr, BLOCK: tl.constexpr):
        _slow_copy(src, dst, n, iters, USE_GDC, BLOCK)


def _parents(dot: str) -> dict[str, set[str]]:
    """Kernel name -> its parents' kernel names in a cudaGraphDebugDotPrint dump (one node per kernel name here)."""
    names = {}
    for m in re.finditer(r'^"(graph_\d+_node_\d+)"\[(.*?)"\];\s*$', dot, re.S | re.M):
        found = re.search(r"\| ([^|{}\s]+?)\\<\\<\\<", m.group(2))
        names[m.group(1)] = found.group(1) if found else "?"
    out: dict[str, set[str]] = {}
    for a, b in re.findall(r'^"(graph_\d+_node_\d+)"\s*->\s*"(graph_\d+_node_\d+)"', dot, re.M):
        out.setdefault(names.get(b, "?"), set()).add(names.get(a, "?"))
    return out


EXPECTED_PARENTS = {
    "off": {"_shrink3_kernel": {"_gemv_stand_in"}, "_expand3_kernel": {"_shrink3_kernel"}},
    "before": {"_shrink3_kernel": {"_writer"}, "_gemv_stand_in": {"_shrink3_kernel"},
               "_expand3_kernel": {"_gemv_stand_in"}},
    "fork": {"_shrink3_kernel": {"_writer"}, "_gemv_stand_in": {"_writer"},
             "_expand3_kernel": {"_gemv_stand_in", "_shrink3_kernel"}},
}  # fmt: skip


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
@pytest.mark.parametrize("mode,ids", [("off", [0]), ("before", [0]), ("fork", [0]), ("fork", [1, 0, -1, 2])])
def test_graph_reads_x_after_its_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                        ids: list[int]) -> None:  # fmt: skip
    from inlaid_worker.kernels import lora_fused, pdl
    from lora_pools import lora_inputs

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    monkeypatch.setattr(lora_early, "EARLY", mode)
    widths, k = (64, 32, 32), 512
    pools, x_src, y0, batch = lora_inputs(ids, k, widths, 16, True, "cuda", zlib.crc32(mode.encode()), True)
    cols = [0, 64, 96]
    x, y = torch.zeros_like(x_src), torch.zeros_like(y0)
    blk_x, blk_y = triton.next_power_of_2(x.numel()), triton.next_power_of_2(y.numel())

    def chain() -> None:
        _writer[(1,)](x_src, x, x.numel(), 20000, BLOCK=blk_x, **pdl.launch_kw())
        early = lora_early.shrink_ahead(x, pools, batch, lora_early.early_mode(x, batch))
        _gemv_stand_in[(1,)](y0, y, y.numel(), 2000, BLOCK=blk_y, **pdl.launch_kw())
        if early is None:
            lora_fused.lora_apply_fused(y, x, pools, cols, batch)
        else:
            lora_early.finish(y, early, cols)

    with pdl.scope(1):
        chain()  # compiles (and, for fork, makes the branch stream) outside the capture
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph(keep_graph=True)  # (kept for debug_dump; instantiated at the first replay)
        with torch.cuda.graph(g):
            chain()
    torch.cuda.synchronize()
    dot = tmp_path / "g.dot"
    g.debug_dump(str(dot))
    parents = _parents(dot.read_text())
    for kernel, want in EXPECTED_PARENTS[mode].items():
        assert parents.get(kernel) == want, (mode, kernel, parents)
    for i in range(3):
        x_src.copy_(torch.randn_like(x_src))
        x.fill_(float("nan"))  # a shrink that read x before the writer stored it would give NaN
        y.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        ref = lora_fused.lora_fused_reference(y0, x_src, pools, cols, torch.tensor(ids, device="cuda")).float()
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        assert torch.isfinite(y).all() and err < 2e-3, (mode, i, err)
