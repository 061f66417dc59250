"""Real-shape GPU tests (issue 4) of paged_decode's impls "tiles" (_decode_kernel / _decode_body + _merge_kernel) and
"split" (_split_kernel, merge kernel or in-kernel merge) against paged_decode_reference (pure torch: fp32 math, output
rounded to the input dtype). The default impl at the H200's smallest buckets is "row" (test_decode_row.py has its real
shapes); these two had only the small in-process cases of test_decode_kernels.py / test_cpu_cov_paged_decode.py on CUDA.

Shapes: Llama-2-7B attention (32 heads, head_dim 128, MHA) and a Llama-3-8B-like GQA layout (32 query heads, 8 KV
heads, head_dim 128), fp16 and bf16, the engine's KV block of 16 tokens (config.block_size). Batches 1, 8 and 32 at
contexts 1, 511, 2048 and a ragged mix (0 = a graph's padding row, which must get zeros). Each sequence's blocks are
drawn at random from a pool twice the size needed (non-contiguous, out of order; 2048 tokens = 128 blocks), and every
cache slot a correct kernel must not read holds NaN: the slots past each context in its last block, and a poison
block that every table entry past the context names. The partition workspace starts as NaN too
(fused_cases._nan_workspace), so a partition row the merge reads but no partition wrote shows; so does the output
(`out=` filled with NaN), so a row no kernel wrote fails, and the zero check of the padding rows can fail.

Per impl several launch options: "tiles" as the engine launches it (partition count of choose_num_parts, the
autotuned tile, SKIP_EMPTY where skip_empty_for says so), with skip_empty=1 + tiles_prefetch=1 (the peeled first tile;
without PDL its wait is a no-op, the arithmetic is the PDL path's) on 16 partitions, 32 partitions of 128-token tiles,
and one partition (no merge); "split" with SPLIT_DEFAULTS, merge=2 on 8 partitions (counters left at 0, a rerun
bit-identical), 32-token tiles on 2 warps without prefetch / lookahead, and one partition. paged_decode drops merge 2
and SKIP_EMPTY where it takes one partition (choose_num_parts gives 1 for 7B MHA at batch 32 on the H200), so each
variant names its partition count, and the test records every kernel launch (Launches) and asserts that the first
kernel got the partition count and constexprs the variant names (and the merge kernel ran exactly when partitions
meet through it). Canary: the engine launch over tables that name other (finite) blocks must be far off (relative
error > 0.3), so the comparison can fail.

Tolerances (relative Frobenius error of the whole output against the reference: fp32 math over the same 16-bit
inputs, its output rounded to the input dtype as the kernels' is; and the largest error of one (sequence, head) row):
fp16 2e-3 / 5e-3, about 4x / 10x fp16's unit roundoff 2^-11 = 4.9e-4 (P is rounded to 16 bits before the
tensor-core P.V in "tiles", the output once in both); bf16 1e-2 / 2.5e-2, about 2.6x / 6.4x bf16's 2^-8 = 3.9e-3 (the
repo's CUDA bf16 bound, cpu_cov_bf16.CUDA_BF16_TOL). Measured errors and partition counts go to the JSON-lines file
named by env INLAID_GPU_REAL_LOG when set. CUDA only: skipped on the CPU."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import pytest
import torch
from cpu_cov_bf16 import CUDA_BF16_TOL
from fused_cases import _nan_workspace, _rel

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="real-shape kernel tests need CUDA (device tool)")]

D = 128  # head_dim of Llama-2-7B / Llama-3-8B
BS = 16  # tokens a KV block: the engine's (config.block_size, engine.factory)
DEV = "cuda"  # the tests' device (a CPU emulation under Triton's interpreter may set "cpu")
SHAPES = {"7b-mha": (32, 32), "gqa-32q-8kv": (32, 8)}  # (query heads, KV heads)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# (whole-output, worst-row) relative error bounds; see the module docstring
TOL = {"fp16": (2e-3, 5e-3), "bf16": (CUDA_BF16_TOL, 2.5 * CUDA_BF16_TOL)}
CANARY = 0.3  # the wrong-table launch must be at least this far off


def _ragged(n: int, seed: int) -> list[int]:
    """n context lengths: 0 (padding row), 1, 511, 2048, 512, 2047 first, the rest uniform in 2..2048."""
    fixed = [0, 1, 511, 2048, 512, 2047][:n]
    g = torch.Generator().manual_seed(seed)
    return fixed + torch.randint(2, 2049, (n - len(fixed),), generator=g).tolist()


LAYOUTS: dict[str, list[int]] = {
    "b1-ctx1": [1],
    "b1-ctx2048": [2048],
    "b8-ctx511": [511] * 8,
    "b8-ragged": [2048, 0, 1, 511, 17, 1000, 33, 1537],
    "b32-ragged": _ragged(32, 32),
}
# per impl: variant -> (paged_decode keyword arguments, what its first kernel must be launched with: kernel arguments
# by name, an optional constexpr left out counting as 0). "engine" first: what the engine's eager path passes; its
# partition count is choose_num_parts' (checked in the test). Every other variant names its partition count, since
# paged_decode sets merge 0 and drops SKIP_EMPTY at one partition (7B MHA at batch 32 on the H200 gets 1).
VARIANTS: dict[str, dict[str, tuple[dict[str, Any], dict[str, int]]]] = {
    "tiles": {
        "engine": (dict(), dict()),
        "bn64-skip-prefetch1-16parts": (
            dict(tune=False, tiles_block_n=64, skip_empty=1, tiles_prefetch=1, num_parts=16),
            dict(NUM_PARTS=16, BLOCK_N=64, SKIP_EMPTY=1, PREFETCH=1),
        ),
        "bn128-32parts": (
            dict(tune=False, tiles_block_n=128, skip_empty=0, tiles_prefetch=0, num_parts=32),
            dict(NUM_PARTS=32, BLOCK_N=128, SKIP_EMPTY=0, PREFETCH=0),
        ),
        "bn32-1part": (dict(tune=False, tiles_block_n=32, num_parts=1), dict(NUM_PARTS=1, BLOCK_N=32)),
    },
    "split": {
        "engine": (dict(), dict()),
        "merge2-8parts": (dict(merge=2, num_parts=8), dict(NUM_PARTS=8, MERGE=2)),
        "bn32-w2-noprefetch-nolookahead-8parts": (
            dict(block_n=32, num_warps=2, prefetch=0, lookahead=0, num_parts=8),
            dict(NUM_PARTS=8, MERGE=1, BLOCK_N=32, num_warps=2, PREFETCH=0, LOOKAHEAD=0),
        ),
        "1part": (dict(num_parts=1), dict(NUM_PARTS=1, MERGE=0)),
    },
}
KERNELS = ("_decode_kernel", "_decode_tuned", "_split_kernel", "_merge_kernel")  # paged_decode's launches


class Launches:
    """Stands in for one of paged_decode's Triton kernels (or its autotuner) in the module: appends each launch's
    arguments by name (with `kernel` and `grid`) to `log`, then launches the kernel."""

    def __init__(self, kernel: Any, name: str, log: list[dict[str, Any]]) -> None:
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kw: Any) -> Any:
            self.log.append({**dict(zip(self.kernel.arg_names, args)), **kw, "kernel": self.name, "grid": grid})
            return self.kernel[grid](*args, **kw)

        return launch

    def __getattr__(self, attr: str) -> Any:  # the autotuner's best_config
        return getattr(self.kernel, attr)


def record(test: str, **vals: Any) -> None:
    """One JSON line (the test's measured numbers) appended to env INLAID_GPU_REAL_LOG's file, when set."""
    path = os.environ.get("INLAID_GPU_REAL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(test=test, **vals)) + "\n")


def paged_kv(lens: list[int], kv_heads: int, dtype: torch.dtype, seed: int,
             bs: int = BS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(k_cache, v_cache, tables, spare_tables), caches [blocks, bs, kv_heads, D] on DEV: each sequence's blocks drawn
    at random from a pool twice the size needed (non-contiguous, out of order); the slots past each context in its last
    block and a poison block (named by every table entry past the context) hold NaN; spare_tables names the pool's
    other blocks (finite: the canary's wrong tables)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    need = [-(-n // bs) for n in lens]
    used = sum(need)
    pool = 2 * used + 1
    k_cache = torch.randn(pool, bs, kv_heads, D, generator=g, device=DEV).to(dtype)
    v_cache = torch.randn(pool, bs, kv_heads, D, generator=g, device=DEV).to(dtype)
    poison = pool - 1
    k_cache[poison] = float("nan")
    v_cache[poison] = float("nan")
    perm = torch.randperm(pool - 1, generator=g, device=DEV).to(torch.int32)
    width = max(need) + 2  # at least 2 entries past every context
    tables = torch.full((len(lens), width), poison, dtype=torch.int32, device=DEV)
    spare = tables.clone()
    off = 0
    for i, (n, nb) in enumerate(zip(lens, need, strict=True)):
        tables[i, :nb] = perm[off : off + nb]
        spare[i, :nb] = perm[used + off : used + off + nb]
        off += nb
        if n % bs:  # the last block's slots past the context
            last = int(tables[i, nb - 1])
            k_cache[last, n % bs :] = float("nan")
            v_cache[last, n % bs :] = float("nan")
    return k_cache, v_cache, tables, spare


def rel_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(relative Frobenius error of the whole output, worst relative error of one row over the last dim); inf where
    out is not finite. Rows whose reference is 0 (padding) count by their absolute error."""
    if not bool(torch.isfinite(out).all()):
        return float("inf"), float("inf")
    diff = (out.double() - ref.double()).norm(dim=-1)
    norm = ref.double().norm(dim=-1)
    row = torch.where(norm > 0, diff / norm.clamp_min(1e-30), diff)
    return _rel(out, ref), float(row.max())


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", list(VARIANTS))
def test_paged_decode_real_shapes(impl: str, shape: str, dtype: str, layout: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from inlaid_worker.kernels import decode_fused
    from inlaid_worker.kernels import paged_decode as pd_mod
    from inlaid_worker.kernels.paged_decode import choose_num_parts, paged_decode, paged_decode_reference

    for var in ("INLAID_DECODE_ATTN", "INLAID_DECODE_SPLIT", "INLAID_DECODE_TILES_CONFIG", "INLAID_DECODE_SKIP_EMPTY",
                "INLAID_DECODE_TILES_PREFETCH"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pd_mod, "workspace", _nan_workspace)  # a partition row read but never written shows
    launches: list[dict[str, Any]] = []
    for kernel in KERNELS:
        monkeypatch.setattr(pd_mod, kernel, Launches(getattr(pd_mod, kernel), kernel, launches))
    heads, kv_heads = SHAPES[shape]
    lens_list = LAYOUTS[layout]
    s = len(lens_list)
    seed = zlib.crc32(f"{shape}-{dtype}-{layout}".encode())
    k_cache, v_cache, tables, spare = paged_kv(lens_list, kv_heads, DTYPES[dtype], seed)
    lens = torch.tensor(lens_list, dtype=torch.int32, device=DEV)
    g = torch.Generator(device=DEV).manual_seed(seed + 1)
    q = torch.randn(s, heads, D, generator=g, device=DEV).to(DTYPES[dtype])
    scale = D**-0.5
    ref = paged_decode_reference(q, k_cache, v_cache, tables, lens, scale).float()
    pad = lens == 0
    tol, row_tol = TOL[dtype]
    measured = {}
    for name, (opts, want) in VARIANTS[impl].items():
        if name == "engine":
            want = dict(NUM_PARTS=choose_num_parts(s, kv_heads, q.device))
        launches.clear()
        out = paged_decode(q, k_cache, v_cache, tables, lens, scale, out=torch.full_like(q, float("nan")), impl=impl,
                           **opts)  # fmt: skip
        first = [x for x in launches if x["kernel"] != "_merge_kernel"][-1]  # the last: after the autotuner's plain run
        got = {k: first.get(k, 0) for k in want}
        assert got == want, (name, "the launch must take the variant's options", got, want)
        parts = int(first["NUM_PARTS"])
        merged = sum(x["kernel"] == "_merge_kernel" for x in launches)
        assert merged == int(parts > 1 and first.get("MERGE", 1) == 1), (name, parts, "merge kernel launches", merged)
        err, row_err = rel_errors(out, ref)
        measured[name] = (err, row_err, parts)
        assert err < tol and row_err < row_tol, (name, opts, err, row_err)
        assert bool((out[pad] == 0).all()), (name, "a sequence with context 0 (graph padding) must get zeros")
        if opts.get("merge") == 2:
            assert parts > 1 and first["MERGE"] == 2, (name, "the in-kernel merge must run", parts)
            cnt = decode_fused.counters(q.device, s * kv_heads)  # the buffer the launch got (large enough: no new one)
            assert cnt.data_ptr() == first["cnt_ptr"].data_ptr(), (name, "counters() must give the launch's buffer")
            assert bool((cnt == 0).all()), (name, "the in-kernel merge must leave its arrival counters at 0")
            again = paged_decode(q, k_cache, v_cache, tables, lens, scale, out=torch.full_like(q, float("nan")),
                                 impl=impl, **opts)  # fmt: skip
            assert torch.equal(out, again), (name, "a second launch over the same inputs must give the same output")
    wrong = paged_decode(q, k_cache, v_cache, spare, lens, scale, impl=impl, **VARIANTS[impl]["engine"][0])
    canary = _rel(wrong, ref)
    record(f"paged_decode[{impl}-{shape}-{dtype}-{layout}]", tol=tol, row_tol=row_tol, canary=canary,
           **{k: dict(err=e, row_err=r, parts=n) for k, (e, r, n) in measured.items()})  # fmt: skip
    assert canary > CANARY, f"other blocks' K/V went unnoticed: {canary}"
