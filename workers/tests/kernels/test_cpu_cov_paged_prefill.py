"""CPU coverage (issue 4) of paged_prefill's 16-bit path (_prefill_kernel with BLOCK_N 64, IEEE off): the only CPU
test of the kernel (model/test_prefill_graphs.py, prefill_graphs_case.kernel_error) runs it in fp32 (BLOCK_N 32,
IEEE dots). Here fp16 and bf16 on random paged KV against model.attention.paged_attention_reference (pure torch):
grouped-query heads, a decode row, a whole prompt over several key blocks, a chunk after cached context, a tile of
33 = 32 + 1 rows, padding rows and padding tiles (rows no tile covers must stay exactly zero), head_dim 32 and 24
(D_PAD). bf16 under the interpreter with bf16 arithmetic patched in (cpu_cov_bf16.patch_bf16; one case also
unpatched, where it must be far off). On CUDA in-process. On the CPU: one subprocess, this file as a script."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_cov_bf16  # noqa: E402

CUDA = torch.cuda.is_available()
CASES: dict[str, dict[str, Any]] = {
    "fp16-gqa-d32": dict(dtype=torch.float16, heads=4, kv_heads=2, d=32),
    "bf16-gqa-d32": dict(dtype=torch.bfloat16, heads=4, kv_heads=2, d=32),
    "bf16-mha-d24": dict(dtype=torch.bfloat16, heads=2, kv_heads=2, d=24),
    "fp16-mqa-d24": dict(dtype=torch.float16, heads=3, kv_heads=1, d=24),
}
UNPATCHED = ("bf16-gqa-d32",)
BS = 4  # tokens a KV block


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    from inlaid_worker.kernels.paged_prefill import paged_prefill
    from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference
    from inlaid_worker.model.prefill_layout import plan_tiles

    p = CASES[case_id]
    g = torch.Generator().manual_seed(zlib.crc32(case_id.encode()))
    blocks, heads, kv_heads, d, dtype = 200, p["heads"], p["kv_heads"], p["d"], p["dtype"]
    k_cache = torch.randn(blocks, BS, kv_heads, d, generator=g).to(device, dtype)
    v_cache = torch.randn(blocks, BS, kv_heads, d, generator=g).to(device, dtype)
    qlen, ctx = [1, 70, 9, 33], [150, 70, 40, 33]  # decode row; whole prompt; chunk after 31 cached; 33 = 32 + 1
    perm = torch.randperm(blocks, generator=g)
    tables = torch.stack([perm[i * 40 : (i + 1) * 40] for i in range(4)])
    qsl = [0, *torch.tensor(qlen).cumsum(0).tolist()]
    t = qsl[-1] + 5  # 5 padding rows
    q = torch.randn(t, heads, d, generator=g).to(device, dtype)
    tiles = plan_tiles(torch.tensor(qsl).numpy(), torch.tensor(ctx).numpy())
    table = torch.zeros(4, tiles.shape[1] + 3, dtype=torch.int32)  # 3 padding tiles
    table[:, : tiles.shape[1]] = torch.from_numpy(tiles)
    out = paged_prefill(q, k_cache, v_cache, tables.to(device, torch.int32), table.to(device), d**-0.5)
    meta = AttentionMetadata.build(torch.zeros(qsl[-1], dtype=torch.int64, device=device), qsl, ctx,
                                   tables.to(device), BS)  # fmt: skip
    ref = paged_attention_reference(q[: qsl[-1]].float(), k_cache.float(), v_cache.float(), meta, d**-0.5)
    err = (out[: qsl[-1]].float() - ref).norm(dim=-1) / ref.norm(dim=-1)
    return dict(err=float(err.max()), pad_zero=not bool(out[qsl[-1] :].any()), dtype=str(out.dtype))


@pytest.fixture(scope="module")
def prefill_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(prefill_case: Any) -> None:
    cpu_cov_bf16.assert_far_off(prefill_case(f"unpatched:{UNPATCHED[0]}"))


@pytest.mark.parametrize("case_id", list(CASES))
def test_16bit_prefill_matches_reference_attention(case_id: str, prefill_case: Any) -> None:
    res = prefill_case(case_id)
    tol = cpu_cov_bf16.bf16_tol() if "bf16" in case_id else 5e-3
    cpu_cov_bf16.assert_within(res, tol)  # max row error; K/V order 1
    assert res["pad_zero"], "rows no tile covers must be exactly zero"
    assert res["dtype"] == str(CASES[case_id]["dtype"])


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
