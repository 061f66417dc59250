"""The cluster-merged row attention (bench-only: bench/kernels/row_cluster.cu, row_cluster.py): CPU checks of the
launcher's config checks and of the limits that send a call back to decode_row; an offline NVRTC compile of the .cu
for sm_90a where cuda-python's NVRTC is installed (the device; CI skips it: the NVRTC wheel is ~90 MB); GPU checks
(CUDA sm_90 with cuda-python only) against decode_row.row_rope_reference: outputs, the KV write bit for bit, reruns,
a padding row, and a PDL graph replay."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))  # (the bench-only modules)
import row_cluster
from inlaid_worker.kernels import decode_row, pdl

GPU = pytest.mark.skipif(not row_cluster.available(), reason="needs CUDA (sm_90) and cuda-python")


def _call(heads: int = 4, kv_heads: int = 4, d: int = 128, bs: int = 16, dtype: torch.dtype = torch.float16,
          table_dtype: torch.dtype = torch.int32, sums: bool = False, device: str = "cpu") -> dict:  # fmt: skip
    """A valid row_rope_decode call (2 rows) with the given deviations."""
    qkv = torch.randn(2, (heads + 2 * kv_heads) * d, device=device)
    return dict(qkv=qkv if sums else qkv.to(dtype), cos=torch.randn(2, d, device=device).to(dtype),
                sin=torch.randn(2, d, device=device).to(dtype),
                k_cache=torch.randn(6, bs, kv_heads, d, device=device).to(dtype),
                v_cache=torch.randn(6, bs, kv_heads, d, device=device).to(dtype),
                block_tables=torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=table_dtype, device=device),
                context_lens=torch.tensor([5, 2 * bs + 1], dtype=torch.int32, device=device),
                slot_mapping=torch.tensor([4, 5 * bs], dtype=torch.int32, device=device), heads=heads, sums=sums)  # fmt: skip


@pytest.mark.parametrize(("cluster", "warps", "what"), [(3, 4, "cluster"), (8, 16, "warps"), (16, 8, "partitions"),
                                                         (0, 1, "cluster")])  # fmt: skip
def test_bad_configs_are_named(cluster: int, warps: int, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        row_cluster.check_config(cluster, warps)


def test_good_configs_pass() -> None:
    for c, w in ((8, 4), (4, 8), (16, 2), (1, 8), (16, 4)):
        row_cluster.check_config(c, w)


@pytest.mark.parametrize(("change", "reason"), [
    (dict(d=64), "head_dim 64"), (dict(heads=8, kv_heads=4), "8 heads over 4"), (dict(dtype=torch.bfloat16), "fp16"),
    (dict(bs=8), "block size 8"), (dict(table_dtype=torch.int64), "int32"), (dict(sums=True, dtype=torch.float16), None),
])  # fmt: skip
def test_limits_send_the_call_back(change: dict, reason: str | None) -> None:
    """Outside the kernel's case the reason names the limit (the caller runs decode_row); inside it, on the CPU, the
    only reason left is the device."""
    why = row_cluster.unsupported(**_call(**change))
    if reason is None:
        assert why == "not on CUDA"
    else:
        assert why is not None and reason in why


def test_sums_need_fp32_qkv() -> None:
    c = _call()
    c["sums"] = True  # fp16 qkv read as sums
    assert "sums=True" in (row_cluster.unsupported(**c) or "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only path")
def test_unavailable_and_launch_refused_on_cpu() -> None:
    assert not row_cluster.available()
    c = _call()
    with pytest.raises(ValueError, match="not on CUDA"):
        row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slot_mapping"], c["k_cache"], c["v_cache"],
                                       c["block_tables"], c["context_lens"], 0.1, c["heads"])  # fmt: skip
    with pytest.raises(ValueError, match="cluster"):
        row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slot_mapping"], c["k_cache"], c["v_cache"],
                                       c["block_tables"], c["context_lens"], 0.1, c["heads"], cluster=3)  # fmt: skip


def test_offline_nvrtc_compile() -> None:
    """The .cu compiles for sm_90a without a GPU (skipped where cuda-python's NVRTC is not installed)."""
    try:
        from cuda.bindings import nvrtc  # noqa: F401
    except ImportError:
        pytest.skip("cuda-python (NVRTC) not installed")
    try:
        cubin = row_cluster.compile_cubin("sm_90a")
        variant = row_cluster.compile_cubin("sm_90a", minb=2, lookahead=0, mbar=1)  # the bench's other builds
    except RuntimeError as exc:
        if "NVRTC failed" in str(exc):
            raise
        pytest.skip(f"NVRTC library not loadable: {exc}")
    assert cubin[:4] == b"\x7fELF" and variant[:4] == b"\x7fELF"


def _gpu_case(b: int, lens: list[int], bs: int, sums: bool, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    heads, d = 8, 128
    per = max(1, -(-max(lens) // bs))
    blocks = b * per + 2
    tables = torch.randperm(blocks, generator=g)[: b * per].reshape(b, per).to(torch.int32)  # disjoint rows
    slots = [int(tables[i, (n - 1) // bs]) * bs + (n - 1) % bs if n > 0 else -1 for i, n in enumerate(lens)]
    qkv = torch.randn(b, 3 * heads * d, generator=g)
    ang = (torch.tensor(lens, dtype=torch.float32).clamp(min=1)[:, None] - 1) * 0.01 * torch.arange(d)[None]
    dev = "cuda"
    return dict(qkv=(qkv if sums else qkv.half()).to(dev), qkv16=qkv.half().to(dev), cos=ang.cos().half().to(dev),
                sin=ang.sin().half().to(dev), slots=torch.tensor(slots, dtype=torch.int32, device=dev),
                k=torch.randn(blocks, bs, heads, d, generator=g).half().to(dev),
                v=torch.randn(blocks, bs, heads, d, generator=g).half().to(dev), tables=tables.to(dev),
                lens=torch.tensor(lens, dtype=torch.int32, device=dev), heads=heads)  # fmt: skip


@GPU
@pytest.mark.parametrize(("lens", "bs"), [([1], 16), ([15], 16), ([16], 16), ([17], 32), ([511], 16), ([512], 16),
                                          ([2048], 16), ([17, 512], 32), ([511, 0, 2048, 16], 16)])  # fmt: skip
@pytest.mark.parametrize("cfg", [dict(cluster=8, warps=4), dict(cluster=4, warps=8), dict(cluster=16, warps=2),
                                 dict(cluster=1, warps=8), dict(cluster=8, warps=4, lookahead=0, mbar=1)])  # fmt: skip
@pytest.mark.parametrize("sums", [False, True])
def test_matches_the_reference(lens: list[int], bs: int, cfg: dict, sums: bool) -> None:
    c = _gpu_case(len(lens), lens, bs, sums, len(lens) * 1000 + max(lens) + bs)
    scale = 128**-0.5
    kr, vr = c["k"].clone(), c["v"].clone()
    ref = decode_row.row_rope_reference(c["qkv16"], c["cos"], c["sin"], c["slots"], kr, vr, c["tables"], c["lens"],
                                        scale, c["heads"]).float()  # fmt: skip
    kk, vv = c["k"].clone(), c["v"].clone()
    outs = [row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv, c["tables"], c["lens"],
                                           scale, c["heads"], sums=sums, gdc=0, **cfg) for _ in range(2)]  # fmt: skip
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(kk, kr) and torch.equal(vv, vr)  # the KV write, bit for bit
    assert (outs[0].float() - ref).abs().max() <= 2e-3 * ref.abs().max()
    if 0 in lens:
        assert (outs[0][lens.index(0)] == 0).all()


@GPU
def test_pdl_graph_replay_matches_eager() -> None:
    """Under pdl.scope(1), after the shipped (PDL) row kernel, in a CUDA graph: the replay gives the eager output."""
    c = _gpu_case(1, [512], 16, False, 7)
    k2, v2, kk, vv = c["k"].clone(), c["v"].clone(), c["k"].clone(), c["v"].clone()

    def seq() -> torch.Tensor:
        decode_row.row_rope_decode(c["qkv"], c["cos"], c["sin"], c["slots"], k2, v2, c["tables"], c["lens"], 0.1, 8)
        return row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv, c["tables"],
                                              c["lens"], 0.1, 8)  # fmt: skip

    eager = row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv, c["tables"], c["lens"],
                                           0.1, 8, gdc=0)  # fmt: skip
    g = torch.cuda.CUDAGraph()
    with pdl.scope(1):
        seq()
        torch.cuda.synchronize()
        with torch.cuda.graph(g):
            out = seq()
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
