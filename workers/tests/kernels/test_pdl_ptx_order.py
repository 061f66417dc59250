"""kernels.pdl's rules checked where they matter, in the sm_90 PTX the decode graphs run (built offline, so on the
CPU): in every PDL-aware kernel (USE_GDC 1, as decode graphs launch them), nothing is stored before
griddepcontrol.wait, every path to ret passes a wait, and whatever may load before it derives only from the
weights (GEMVs: words, scales, zeros, perm; norm: its weight) or, for the LoRA kernels, the pools and the staged
row metadata (the documented exception). The interpreter tests (test_pdl*.py) skip griddepcontrol, so they cannot
see a load the compiler (or a kernel edit) puts before the wait; test_pdl_lora.py checks the Gluon GEMV's PTX
for its x loads only. Launches are recorded through a patched JITFunction.run (sm90_build.record): nothing runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pdl_ptx_order import Report, analyze
from sm90_build import arg_type, bind, record  # type: ignore[import-not-found]

GEMV_OK = {"qw_ptr", "sc_ptr", "qz_ptr", "perm_ptr"}  # weights: no kernel of a step writes them
LORA_META = {"tok_ptr", "badp_ptr", "bstart_ptr", "blen_ptr"}  # staged before the replay (kernels.pdl)


def _record(monkeypatch: pytest.MonkeyPatch, launch: Any) -> list[tuple[Any, tuple, dict]]:
    """sm90_build.record(launch) for the other test files' PDL checks, with kernels.pdl's mode left at 1 until the
    test ends (as their host code after the record expects)."""
    from inlaid_worker.kernels import pdl

    seen = record(launch)
    monkeypatch.setattr(pdl._MODE, "value", 1)
    return seen


def weight(k: int, n: int, bits: int) -> Any:
    """A prepared GPTQ weight (its values do not matter: nothing runs)."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    torch.manual_seed(0)
    return prepare_gptq_weight(**make_gptq(k, n, bits, 128, False, False, 1), bits=bits, group_size=128, sym=False)


def _ptx(fn: Any, args: tuple, kwargs: dict, force: dict | None = None) -> tuple[str, list[str]]:
    """fn's PTX for sm_90 with the recorded arguments' types and constexprs; the non-constexpr parameter names."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params, bound, opts = bind(fn, args, kwargs)
    sig: dict[str, str] = {}
    consts: dict[str, Any] = {}
    for p, jp in zip(params, fn.params, strict=True):
        v = bound.get(p.name, p.default)  # (a parameter left at its default: fused_norm's clr_ptr=None, n_rows=0)
        if jp.is_constexpr or v is None:  # (None: Triton specialises it as a constexpr)
            consts[p.name] = (force or {}).get(p.name, v)
            sig[p.name] = "constexpr"
            continue
        sig[p.name] = arg_type(fn, p.name, v)
    if type(fn).__name__.startswith("Gluon"):
        from triton.experimental.gluon._runtime import GluonASTSource as source
    else:
        source = ASTSource
    ck = triton.compile(source(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32), options=opts)
    return ck.asm["ptx"], [p.name for p in params if sig[p.name] != "constexpr"]


def _check(launches: list[tuple[Any, tuple, dict]], allowed: dict[str, set[str]], variants: bool = True) -> int:
    """Every recorded PDL launch obeys the rules (allowed: kernel name -> pointers it may read before the wait)."""
    checked = 0
    for fn, args, kwargs in launches:
        if not kwargs.get("USE_GDC"):
            continue
        assert kwargs.get("launch_pdl") is True, fn.__name__
        forces = [{}]
        if variants and "USE_ASM" in fn.arg_names:
            forces.append({"USE_ASM": True})  # the GPU's inline-asm path (use_asm() is off on the CPU)
        for force in forces:
            try:
                ptx, names = _ptx(fn, args, dict(kwargs), force)
            except Exception as exc:  # noqa: BLE001 - no sm_90 toolchain here
                pytest.skip(f"offline sm_90 build unavailable: {exc!r}"[:300])
            rep: Report = analyze(ptx)
            where = (fn.__name__, force)
            assert rep.waits >= 1 and rep.launches >= 1, where
            assert not rep.early_writes, (where, rep.early_writes[:3])
            assert not rep.ret_unwaited, where
            early = {names[i] for _, src in rep.early_loads for i in src if i < len(names)}
            ptrs = {n for n in early if n.endswith("_ptr") or n[:1] in "abrs" and n[1:].isdigit()}
            assert ptrs <= allowed[fn.__name__], (where, sorted(ptrs - allowed[fn.__name__]))
            checked += 1
    return checked


def test_the_checker_sees_a_load_or_store_before_the_wait() -> None:
    body = """
.visible .entry k(
    .param .u64 k_param_0,
    .param .u64 k_param_1
)
{
    ld.param.u64 %rd1, [k_param_0];
    ld.param.u64 %rd2, [k_param_1];
    setp.eq.s32 %p1, %r1, 0;
    @%p1 bra $L__BB0_2;
    griddepcontrol.wait;
$L__BB0_2:
    ld.global.b32 %r2, [%rd1];
    mad.wide.s32 %rd3, %r2, 4, %rd2;
    st.global.b32 [%rd3], %r2;
    ret;
}"""
    rep = analyze(body)
    assert rep.waits == 1 and rep.ret_unwaited  # the branch skips the wait
    assert [src for _, src in rep.early_loads] == [{0}] and len(rep.early_writes) == 1
    fixed = analyze(body.replace("@%p1 bra $L__BB0_2;", ""))
    assert not fixed.ret_unwaited and not fixed.early_loads and not fixed.early_writes


@pytest.mark.parametrize("kind,m,split,stages", [("hgemvr", 1, 2, 1), ("hgemvr", 2, 2, 1), ("hgemvrb", 1, 2, 1),
                                                 ("hgemvrq", 1, 2, 1), ("hgemvp", 1, 3, 1), ("hgemv", 4, 2, 3),
                                                 ("hgemv", 2, 4, 1)])  # fmt: skip
def test_half2_gemvs_load_only_weights_before_the_wait(kind: str, m: int,
                                                       split: int, stages: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n = 768, 64
    w = weight(k, n, 4)
    x, y = torch.zeros(m, k, dtype=torch.float16), torch.empty(m, n, dtype=torch.float16)
    bm = 1 if m == 1 else (2 if m == 2 else 4)
    cfg = QMMConfig(bm, 64, 128, split, 2, stages, False, kind)
    seen = record(lambda: launch_quant_matmul(x, w, cfg, y))
    names = {"_hgemv_kernel", "_hgemvr_kernel"}
    assert _check(seen, dict.fromkeys(names, GEMV_OK)) >= 2


@pytest.mark.parametrize("kind,m,split", [("hgemvr", 1, 2), ("hgemvrb", 2, 3), ("hgemvrq", 1, 1)])
def test_gate_up_swiglu_gemv_loads_only_weights_before_the_wait(kind: str, m: int,
                                                                 split: int) -> None:  # fmt: skip
    """The "swiglu" decode fusion's GEMV (quant_swiglu: gate and up tiles in one split-K reduction, act written)."""
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_swiglu import gemv_swiglu

    k, n = 768, 256
    w = weight(k, n, 4)
    x = torch.zeros(m, k, dtype=torch.float16)
    seen = record(lambda: gemv_swiglu(x, w, QMMConfig(m, 64, 128, split, 2, 1, False, kind)))
    assert [kw.get("SWIGLU") for _, _, kw in seen] == [True]
    assert _check(seen, {"_hgemvr_kernel": GEMV_OK}) == 2


@pytest.mark.parametrize("kind,m,split,role", [("hgemvr", 1, 2, "prod"), ("hgemvrb", 2, 3, "cons"),
                                               ("hgemvr", 1, 1, "cons16"), ("hgemvrq", 1, 1, "swiglu")])
def test_norm_fusion_gemvs_load_only_weights_before_the_wait(monkeypatch: pytest.MonkeyPatch, kind: str, m: int,
                                                             split: int, role: str) -> None:  # fmt: skip
    """The "norm" decode fusion's GEMVs (kernels.gemv_norm): the producer (residual add + sum-of-squares slot) stores
    and the consumer reads h, the slot and the norm weight only after the wait (review of session 12)."""
    from inlaid_worker.kernels import gemv_norm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n = 768, 256
    w = weight(k, n, 4)
    cfg = QMMConfig(m, 64, 128, split, 2, 1, False, kind)
    if role == "prod":
        x, h = torch.zeros(m, k, dtype=torch.float16), torch.zeros(m, n, dtype=torch.float16)
        seen = record(lambda: gemv_norm.gemv_residual(x, w, h, torch.zeros(m), cfg))
    else:
        h, g = torch.zeros(m, k, dtype=torch.float16), torch.ones(k, dtype=torch.float16)
        monkeypatch.setattr(gemv_norm, "NORM_FAST", role == "cons16")
        seen = record(lambda: gemv_norm.gemv_normed(h, g, torch.zeros(m), 1e-5, w, cfg,
                                                                  swiglu=role == "swiglu"))  # fmt: skip
    kw = seen[0][2]
    assert kw.get("RES_OUT") == (role == "prod") and bool(kw.get("NORM_IN")) == (role != "prod"), kw
    assert _check(seen, {"_hgemvr_kernel": GEMV_OK}) == 2


@pytest.mark.parametrize("m,split,ahead", [(1, 2, 1), (3, 2, 2), (2, 1, 2)])
def test_3bit_gemv_loads_only_weights_before_the_wait(m: int, split: int,
                                                      ahead: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n = 640, 40
    w = weight(k, n, 3)
    x, y = torch.zeros(m, k, dtype=torch.float16), torch.empty(m, n, dtype=torch.float16)
    cfg = QMMConfig(m if m <= 2 else 4, 32, 128, split, 1, ahead, False, "hgemv3")
    seen = record(lambda: launch_quant_matmul(x, w, cfg, y))
    assert _check(seen, {"_hgemv3_kernel": GEMV_OK}) >= 2


def test_norm_rope_attention_swiglu_wait_before_any_activation() -> None:
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.paged_decode import paged_decode
    from inlaid_worker.kernels.rope_cache import rope_and_cache
    from inlaid_worker.kernels.silu_mul import silu_mul

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    heads, kvh, d, bs = 4, 2, 32, 4
    kc, vc = h(16, bs, kvh, d), h(16, bs, kvh, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)

    allowed = {"_add_rms_norm_kernel": {"w_ptr"}, "_silu_mul_kernel": set(), "_rope_cache_kernel": set(),
               "_decode_kernel": set(), "_merge_kernel": set()}  # fmt: skip
    seen: list = []
    for step in (lambda: add_rms_norm(h(3, 256), h(256), 1e-5, residual=h(3, 256)),
                 lambda: add_rms_norm(h(3, 256), h(256), 1e-5), lambda: silu_mul(h(2, 2 * 1100)),
                 lambda: rope_and_cache(h(3, (heads + 2 * kvh) * d), h(3, d), h(3, d), torch.tensor([5, -1, 17]),
                                        kc, vc, heads),
                 lambda: paged_decode(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 4, tune=False),
                 lambda: paged_decode(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 1, tune=False)):  # fmt: skip
        seen += record(step)
    assert {fn.__name__ for fn, _, _ in seen} == set(allowed)
    assert _check(seen, allowed) == 7


def test_tiles_skip_empty_reads_only_the_lengths_before_the_wait() -> None:
    """paged_decode's SKIP_EMPTY (the documented exception, as impl "split"'s prefetch): a partition past its context
    reads the staged length, nothing else, before griddepcontrol.wait and exits without waiting or writing; the
    merge reads the lengths after its wait. Without SKIP_EMPTY every path waits (the control)."""
    from inlaid_worker.kernels.paged_decode import paged_decode

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    heads, kvh, d, bs = 4, 2, 32, 4
    kc, vc = h(16, bs, kvh, d), h(16, bs, kvh, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)
    reports = {}
    for skip in (1, 0):
        seen = record(lambda: paged_decode(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 4,  # noqa: B023
                                                         tune=False, skip_empty=skip))  # noqa: B023  # fmt: skip
        assert [fn.__name__ for fn, _, _ in seen] == ["_decode_kernel", "_merge_kernel"]
        assert seen[0][2].get("SKIP_EMPTY", 0) == skip and seen[1][2].get("CHUNK_N", 0) == 64 * skip  # untuned tile
        for fn, args, kwargs in seen:
            ptx, names = _ptx(fn, args, dict(kwargs))
            rep = analyze(ptx)
            early = {names[i] for _, src in rep.early_loads for i in src if i < len(names)}
            reports[(fn.__name__, skip)] = (rep, early)
    rep, early = reports[("_decode_kernel", 1)]
    assert rep.waits >= 1 and not rep.early_writes and early == {"ctx_ptr"} and rep.ret_unwaited, (rep, early)
    rep, early = reports[("_decode_kernel", 0)]
    assert not rep.early_writes and not early and not rep.ret_unwaited, (rep, early)
    for skip in (0, 1):
        rep, early = reports[("_merge_kernel", skip)]
        assert rep.waits >= 1 and not rep.early_writes and not early and not rep.ret_unwaited, (skip, rep, early)


@pytest.mark.parametrize("rope,kv_heads", [(False, 2), (True, 2), (True, 4)])
def test_fused_decode_attention_waits_before_any_load(rope: bool,
                                                      kv_heads: int) -> None:  # fmt: skip
    """decode_fused (the "merge" / "rope" decode fusions; kv_heads 4 = one query head per KV head, vec_mha): every
    input is an activation, the cache or step metadata, so nothing may load before the wait."""
    from inlaid_worker.kernels.decode_fused import decode_attention, rope_decode_attention

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    heads, d, bs = 4, 32, 4
    kc, vc = h(16, bs, kv_heads, d), h(16, bs, kv_heads, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)
    if rope:
        qkv = h(3, (heads + 2 * kv_heads) * d)
        pos, slots, inv = torch.tensor([16, 2, 0]), torch.tensor([16, 22, -1]), torch.ones(d // 2)
        seen = record(lambda: rope_decode_attention(qkv, pos, inv, slots, kc, vc, tables, lens,
                                                                  d**-0.5, heads, 4, tune=False,
                                                                  vec_mha=kv_heads == heads))  # fmt: skip
    else:
        seen = record(lambda: decode_attention(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 4,
                                                             tune=False))  # fmt: skip
    assert [fn.__name__ for fn, _, _ in seen] == ["_fused_decode_kernel"]
    assert _check(seen, {"_fused_decode_kernel": set()}) == 1


@pytest.mark.parametrize("block_m", [1, 16])
def test_lora_kernels_read_only_pools_and_staged_rows_before_the_wait(monkeypatch: pytest.MonkeyPatch,
                                                                       block_m: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.lora_batch import LoraBatch, make_lora_batch, stack_adapters
    from inlaid_worker.kernels.lora_fused import lora_apply_fused

    k, widths, rank = 256, (64, 32, 32), 16
    pools = [stack_adapters([(torch.zeros(rank, k, dtype=torch.float16), torch.zeros(n, rank, dtype=torch.float16),
                              1.0)] * 3, rank) for n in widths]  # fmt: skip
    ids = [1, 0, -1, 2] if block_m == 1 else [0] * 17 + [1] * 3
    t = len(ids)
    if block_m == 1:  # as decode_graphs stages a bucket
        ar = torch.arange(t, dtype=torch.int32)
        batch = LoraBatch(ar, torch.tensor([max(a, 0) for a in ids], dtype=torch.int32), ar,
                          torch.tensor([int(a >= 0) for a in ids], dtype=torch.int32), 1, t, rank)  # fmt: skip
    else:
        batch = make_lora_batch(ids, [rank] * 3, block_m, "cpu")
    x, y = torch.zeros(t, k, dtype=torch.float16), torch.zeros(t, sum(widths), dtype=torch.float16)
    seen = record(lambda: lora_apply_fused(y, x, pools, [0, 64, 96], batch))
    shrink = {"a0", "a1", "a2", "r0", "r1", "r2"} | LORA_META
    expand = {"b0", "b1", "b2", "r0", "r1", "r2", "s0", "s1", "s2"} | LORA_META
    assert _check(seen, {"_shrink3_kernel": shrink, "_expand3_kernel": expand}) == 2


@pytest.mark.parametrize("depth,nsub,bits", [(1, 1, 4), (4, 2, 4), (4, 1, 3)])
def test_tensor_core_gemv_reads_only_words_before_the_wait(monkeypatch: pytest.MonkeyPatch, depth: int, nsub: int,
                                                           bits: int) -> None:  # fmt: skip
    """The Gluon GEMV (quant_tcg): words (registers or the cp.async ring) before the wait; x, scales, zeros after
    (its docstring), stronger than test_pdl_lora.py's check of the x loads."""
    from inlaid_worker.kernels import quant_tcg

    k, n, m = 512, 64, 8
    w = weight(k, n, bits)
    x, y = torch.zeros(m, k, dtype=torch.float16), torch.empty(m, n, dtype=torch.float16)
    monkeypatch.setattr(quant_tcg, "_PDL", True)
    seen = record(lambda: quant_tcg.launch_tcg(x, w, m, n, 2, 4, depth, False, nsub, y))
    assert _check(seen, {"_tcg_kernel": {"qw_ptr", "perm_ptr"}}, variants=False) == 1
    # the compile took quant_tcg's cached layout objects (tcg_layouts: built once per config) and left them as built
    cached, fresh = quant_tcg.tcg_layouts(n, m, 4), quant_tcg.tcg_layouts.__wrapped__(n, m, 4)
    assert seen[0][2]["L5"] is cached["L5"] and all(cached[key] == fresh[key] for key in fresh)


def test_the_pdl_mode_is_per_thread() -> None:
    """A decode graph's scope sets the mode of its own thread only: a kernel another thread launches meanwhile
    (an onboarding re-quantization in thread mode) gets no PDL."""
    import threading

    from inlaid_worker.kernels import pdl

    seen: list[int] = []
    with pdl.scope(0):
        pdl._MODE.value = 1  # what scope(1) sets where PDL is supported (the CPU reports it unsupported)
        t = threading.Thread(target=lambda: seen.append(pdl.mode()))
        t.start()
        t.join()
        assert pdl.mode() == 1 and pdl.launch_kw()["USE_GDC"] == 1
    assert seen == [0] and pdl.mode() == 0
