"""Real-shape GPU tests (issue 4) of paged_prefill (_prefill_kernel: causal attention of a step's rows over the paged
KV cache, in query tiles of TILE_M rows listed by a device table) against model.attention.paged_attention_reference
(pure torch SDPA, called on the 16-bit inputs widened to fp32: fp32 math and an fp32 output). Before, only
model/test_prefill_graphs.py (a tiny model) and the small cases of test_cpu_cov_paged_prefill.py ran it on CUDA.

Shapes: Llama-2-7B attention (32 heads, head_dim 128, MHA) and a Llama-3-8B-like GQA layout (32 query heads, 8 KV
heads), fp16 and bf16, the engine's KV block of 16 tokens. One step mixes prompts of 1, 127, 512 and 2000 new rows:
fresh prompts; the same after cached context (a decode row at position 2047, a 127-row chunk after 384 cached
tokens, 512 after 1, 2000 after 48); and 8 sequences mixing decode rows, chunks after cached context and whole
prompts. The tile table is model.prefill_layout.plan_tiles' (the prefill graphs' own), followed by 3 padding tiles
(all fields 0: sequence 0, first row 0, n = 0). KV blocks, non-contiguous tables and NaN in every cache slot the
kernel must not read (past each context; the poison block named by table entries past it):
test_gpu_real_paged_decode.paged_kv. Canary: the same step over tables that name other (finite) blocks must be far
off (> 0.3).

Padding rows: q has 5 rows past the step's that no tile covers. paged_prefill takes no `out=` and zero-fills its
output itself (torch.zeros_like), so the check that those rows are exactly zero catches only a nonzero (or NaN) value
stored into them (a tile with a wrong first row or row count); it cannot see a missing write (none is due there) nor a
stray store of zeros. A covered row left unwritten stays 0 and fails the comparison with the reference. The 3
padding tiles (n = 0) name rows 0..TILE_M-1 of sequence 0: a store from one would put zeros in covered rows, which the
comparison catches only where it lands after the real tile's store.

Tolerances (relative Frobenius error of the covered rows against the fp32 reference over the same 16-bit inputs; and
the worst (row, head)): fp16 2e-3 / 5e-3, bf16 1e-2 / 2.5e-2, the bounds of test_gpu_real_paged_decode (P is rounded
to 16 bits before the tensor-core P.V, the output once). CUDA only: skipped on the CPU."""

from __future__ import annotations

import zlib

import pytest
import torch
from fused_cases import _rel
from test_gpu_real_paged_decode import BS, CANARY, DTYPES, SHAPES, TOL, D, paged_kv, record, rel_errors

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="real-shape kernel tests need CUDA (device tool)")]

PAD_ROWS, PAD_TILES = 5, 3
# (new rows per sequence, cached tokens before them)
LAYOUTS: dict[str, tuple[list[int], list[int]]] = {
    "prompts-1-127-512-2000": ([1, 127, 512, 2000], [0, 0, 0, 0]),
    "after-cached-context": ([1, 127, 512, 2000], [2047, 384, 1, 48]),
    "b8-mixed": ([2000, 1, 127, 1, 512, 33, 1, 64], [0, 511, 900, 0, 1536, 31, 2047, 7]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_paged_prefill_real_shapes(shape: str, dtype: str, layout: str) -> None:
    from inlaid_worker.kernels.paged_prefill import TILE_M, paged_prefill
    from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference
    from inlaid_worker.model.prefill_layout import plan_tiles

    heads, kv_heads = SHAPES[shape]
    qlen, cached = LAYOUTS[layout]
    ctx = [c + n for c, n in zip(cached, qlen, strict=True)]
    seed = zlib.crc32(f"prefill-{shape}-{dtype}-{layout}".encode())
    k_cache, v_cache, tables, spare = paged_kv(ctx, kv_heads, DTYPES[dtype], seed, BS)
    qsl = [0, *torch.tensor(qlen).cumsum(0).tolist()]
    t = qsl[-1]
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    q = torch.randn(t + PAD_ROWS, heads, D, generator=g, device="cuda").to(DTYPES[dtype])
    planned = plan_tiles(torch.tensor(qsl).numpy(), torch.tensor(ctx).numpy(), TILE_M)
    table = torch.zeros(4, planned.shape[1] + PAD_TILES, dtype=torch.int32)
    table[:, : planned.shape[1]] = torch.from_numpy(planned)
    table = table.cuda()
    scale = D**-0.5
    out = paged_prefill(q, k_cache, v_cache, tables, table, scale)
    meta = AttentionMetadata.build(torch.zeros(t, dtype=torch.int64, device="cuda"), qsl, ctx, tables.long(), BS)
    ref = paged_attention_reference(q[:t].float(), k_cache.float(), v_cache.float(), meta, scale)
    assert bool(torch.isfinite(ref).all()), "the reference must read only finite slots"
    err, row_err = rel_errors(out[:t], ref)
    tol, row_tol = TOL[dtype]
    canary = _rel(paged_prefill(q, k_cache, v_cache, spare, table, scale)[:t], ref)
    record(f"paged_prefill[{shape}-{dtype}-{layout}]", tol=tol, row_tol=row_tol, canary=canary, tiles=planned.shape[1],
           err=err, row_err=row_err)  # fmt: skip
    assert err < tol and row_err < row_tol, (err, row_err)
    assert not bool(out[t:].any()), "rows no tile covers must stay exactly zero (nothing written there)"
    assert out.dtype == DTYPES[dtype]
    assert canary > CANARY, f"other blocks' K/V went unnoticed: {canary}"
