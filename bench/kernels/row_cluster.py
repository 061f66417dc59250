"""Row decode attention merged through a thread-block cluster (row_cluster.cu): decode_row.row_rope_decode's contract
for the 7B-style case (fp16, head_dim 128, one query head per KV head, cache blocks of a multiple of 16 tokens, int32
block tables and lengths), NVRTC-compiled at run time through cuda-python (cuda.bindings) and launched with
cuLaunchKernelEx on torch's current stream (CUDA-graph capturable), with the PDL launch attribute inside a pdl.scope
and a cluster of `cluster` CTAs of `warps` warps along x (partitions P = cluster * warps per (sequence, KV head)).

Why (issue 4): the Triton row kernel's in-kernel merge (partials in global memory, an acq_rel arrival atomic, the last
arriver's reload from L2) costs ~2.9 us a layer on the 7B batch-1 step; Triton cannot express a cluster barrier or
distributed shared memory, which let the partitions meet in cluster rank 0's shared memory instead.

Without CUDA (compute capability 9), cuda-python or NVRTC `available()` is False and nothing here touches them (the
imports are lazy); `unsupported(...)` names why a call cannot take this kernel (the caller then runs decode_row).

Status (bench/results/decode-2026-12-01-s18-cluster.md, H200, session 18): correct, not faster in the step. Best
variant mbar=1, lookahead=0, cluster 8 x 4 warps: alone (32 launches a graph, PDL on) 4.45 us against the Triton
kernel's 4.92 us, but the 7B int4 batch-1 step 1.4804 / 1.4819 ms (0.9998x, 4/8 rounds lower; the control 0.9998x);
the cluster-barrier transport (mbar=0) +0.7 % to +8.6 %, batch 2 (sums) +7 %. So it stays a bench module (beside
cu_gemv), not a worker kernel.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("row_cluster.cu")
KERNEL = b"row_cluster"
HEAD_DIM = 128
MAX_PARTS = 64  # the kernel's shared partial slots
MAX_WARPS = 8  # __launch_bounds__(256)
PORTABLE_CLUSTER = 8  # larger clusters need the non-portable attribute (H100 / H200: up to 16)
MAX_CLUSTER = 16
LOG2E = 1.0 / math.log(2.0)


def check_config(cluster: int, warps: int) -> None:
    """A ValueError naming the bad value: cluster 1..16, warps 1..8 (powers of two), partitions <= 64."""
    if cluster not in (1, 2, 4, 8, 16):
        raise ValueError(f"row_cluster: cluster must be 1, 2, 4, 8 or 16 CTAs, got {cluster}")
    if warps not in (1, 2, 4, 8):
        raise ValueError(f"row_cluster: warps must be 1, 2, 4 or 8, got {warps}")
    if cluster * warps > MAX_PARTS:
        raise ValueError(f"row_cluster: cluster * warps = {cluster * warps} partitions, at most {MAX_PARTS}")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """CUDA with compute capability 9.x, cuda-python's driver and NVRTC bindings, not under the Triton interpreter."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability()[0] != 9:
        return False
    try:
        from cuda.bindings import driver, nvrtc  # noqa: F401
    except ImportError:
        return False
    return True


def unsupported(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                block_tables: torch.Tensor, context_lens: torch.Tensor, slot_mapping: torch.Tensor, heads: int,
                sums: bool) -> str | None:  # fmt: skip
    """Why this kernel cannot take the call (None: it can). Shapes the caller already checked (row_rope_decode's
    contract) are assumed; these are the kernel's own limits."""
    kv_heads, hd = k_cache.shape[2], k_cache.shape[3]
    if hd != HEAD_DIM or heads != kv_heads:
        return f"head_dim {hd} with {heads} heads over {kv_heads} KV heads (needs 128, one head per KV head)"
    if k_cache.dtype != torch.float16 or v_cache.dtype != torch.float16 or cos.dtype != torch.float16:
        return f"cache {k_cache.dtype}, cos {cos.dtype} (needs fp16)"
    if qkv.dtype != (torch.float32 if sums else torch.float16):
        return f"qkv {qkv.dtype} with sums={sums}"
    if k_cache.shape[1] % 16:
        return f"cache block size {k_cache.shape[1]} (needs a multiple of 16)"
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        return f"tables {block_tables.dtype}, lengths {context_lens.dtype} (needs int32)"
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        return f"slots {slot_mapping.dtype}"
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and block_tables.stride(1) == 1):
        return "non-contiguous caches or block-table rows"
    if qkv.stride(1) != 1 or qkv.stride(0) % 8 or cos.stride(1) != 1 or cos.stride(0) % 8 or sin.stride() != cos.stride():
        return "qkv / cos rows not 16-byte aligned"
    for t in (qkv, cos, sin, k_cache, v_cache):
        if t.data_ptr() % 16:
            return "a base address not 16-byte aligned"
    if not qkv.is_cuda:
        return "not on CUDA"
    return None


def _check(result: tuple, what: str) -> tuple:
    if int(result[0]) != 0:
        raise RuntimeError(f"{what} failed: {result[0]!r}")
    return result[1:]


def _arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}{'a' if major == 9 else ''}"


def compile_cubin(arch: str = "sm_90a", minb: int = 0, lookahead: int = 1, mbar: int = 0) -> bytes:
    """row_cluster.cu -> cubin for `arch` with NVRTC (offline-capable: needs no GPU); RuntimeError with the log.
    minb: __launch_bounds__'s minimum resident blocks of 256 threads (0: the source's 1, ~193 registers; 2: <= 128); lookahead 0: one register buffer of K / V (the next tile
    loaded after the current one's math); mbar 1: partials sent with st.async, rank 0 waits on an mbarrier."""
    from cuda.bindings import nvrtc

    (prog,) = _check(nvrtc.nvrtcCreateProgram(SOURCE.read_bytes(), b"row_cluster.cu", 0, [], []), "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"] + ([f"-DROW_MINB={minb}".encode()]
                                                                         if minb else [])  # fmt: skip
        opts += ([] if lookahead else [b"-DROW_LOOKAHEAD=0"]) + ([b"-DROW_MBAR=1"] if mbar else [])
        (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(res) != 0:
            (size,) = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            _check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            raise RuntimeError(f"NVRTC failed for row_cluster.cu:\n{log.decode(errors='replace')}")
        (size,) = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return cubin
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


_MODULES: list = []  # loaded modules stay loaded for the process


@functools.lru_cache(maxsize=8)
def _function(device: int, minb: int = 0, lookahead: int = 1, mbar: int = 0):  # type: ignore[no-untyped-def]
    """The kernel's CUfunction on `device` (compiled and loaded once per process and register cap), non-portable
    clusters allowed."""
    from cuda.bindings import driver

    torch.cuda.init()
    torch.zeros(1, device=f"cuda:{device}")  # the primary context is current from here on
    (module,) = _check(driver.cuModuleLoadData(compile_cubin(_arch(), minb, lookahead, mbar)), "cuModuleLoadData")
    (func,) = _check(driver.cuModuleGetFunction(module, KERNEL), "cuModuleGetFunction")
    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
    _check(driver.cuFuncSetAttribute(func, attr, 1), "cuFuncSetAttribute")
    _MODULES.append(module)
    return func


def row_cluster_decode(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor,
    v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, heads: int,
    cluster: int = 8, warps: int = 4, sums: bool = False, gdc: int | None = None, diag: int = 0,
    cluster_attr: bool = True, minb: int = 0, lookahead: int = 1, mbar: int = 0,
) -> torch.Tensor:  # fmt: skip
    """decode_row.row_rope_decode's contract (returns [S, heads, 128], writes rope(k), v at each row's slot) through
    the cluster kernel. gdc: the kernel's PDL mode (None: kernels.pdl.launch_kw's, with the launch attribute when on).
    ValueError where the config or the call is outside the kernel's limits (unsupported's reason).
    Benches only: diag (the kernel's diagnostic bits: 1 no tile work, 2 no merge) and cluster_attr=False (the same
    grid without the cluster attribute: every CTA its own cluster, so the merge is wrong; a timing ablation)."""
    check_config(cluster, warps)
    s = qkv.shape[0]
    kv_heads = k_cache.shape[2]
    if (qkv.shape[1] != (heads + 2 * kv_heads) * HEAD_DIM or cos.shape != (s, HEAD_DIM) or sin.stride() != cos.stride()
            or slot_mapping.shape != (s,) or block_tables.shape[0] != s or context_lens.shape != (s,)):  # fmt: skip
        raise ValueError(f"row_cluster: qkv {tuple(qkv.shape)}, cos {tuple(cos.shape)}, slots "
                         f"{tuple(slot_mapping.shape)}, tables {tuple(block_tables.shape)}, {heads} heads over cache "
                         f"{tuple(k_cache.shape)} do not match")  # fmt: skip
    why = unsupported(qkv, cos, sin, k_cache, v_cache, block_tables, context_lens, slot_mapping, heads, sums)
    if why is not None:
        raise ValueError(f"row_cluster: {why}")
    out = torch.empty(s, heads, HEAD_DIM, dtype=torch.float16, device=qkv.device)
    if s == 0:
        return out
    from cuda.bindings import driver
    from inlaid_worker.kernels import pdl

    kw = pdl.launch_kw()
    mode = int(kw.get("USE_GDC", 0)) if gdc is None else gdc
    pdl_attr = bool(kw.get("launch_pdl")) if gdc is None else gdc > 0
    func = _function(qkv.device.index or 0, minb, lookahead, mbar)
    args = [
        ctypes.c_void_p(qkv.data_ptr()), ctypes.c_int(qkv.stride(0)), ctypes.c_int(int(sums)),
        ctypes.c_void_p(cos.data_ptr()), ctypes.c_void_p(sin.data_ptr()), ctypes.c_int(cos.stride(0)),
        ctypes.c_void_p(slot_mapping.data_ptr()), ctypes.c_int(int(slot_mapping.dtype == torch.int64)),
        ctypes.c_void_p(k_cache.data_ptr()), ctypes.c_void_p(v_cache.data_ptr()),
        ctypes.c_void_p(block_tables.data_ptr()), ctypes.c_int(block_tables.stride(0)),
        ctypes.c_void_p(context_lens.data_ptr()), ctypes.c_void_p(out.data_ptr()), ctypes.c_float(scale * LOG2E),
        ctypes.c_int(heads), ctypes.c_int(kv_heads), ctypes.c_int(k_cache.shape[1]), ctypes.c_int(mode), ctypes.c_int(diag),
    ]  # fmt: skip
    ptrs = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
    conf = driver.CUlaunchConfig()
    conf.gridDimX, conf.gridDimY, conf.gridDimZ = cluster, kv_heads, s
    conf.blockDimX, conf.blockDimY, conf.blockDimZ = 32 * warps, 1, 1
    conf.sharedMemBytes = 0
    conf.hStream = driver.CUstream(torch.cuda.current_stream(qkv.device).cuda_stream)
    attrs = []
    if pdl_attr:
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        a.value.programmaticStreamSerializationAllowed = 1
        attrs.append(a)
    if cluster > 1 and cluster_attr:
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = cluster, 1, 1
        attrs.append(a)
    conf.attrs = attrs
    conf.numAttrs = len(attrs)
    _check(driver.cuLaunchKernelEx(conf, func, ctypes.addressof(ptrs), 0), "cuLaunchKernelEx")
    KEEP_ARGS.append((args, ptrs))  # the driver copies the parameters at launch; kept one launch back for safety
    del KEEP_ARGS[:-1]
    return out


KEEP_ARGS: list = []


def max_active_clusters(cluster: int, warps: int, kv_heads: int, batch: int, minb: int = 0,
                        lookahead: int = 1, mbar: int = 0) -> int:
    """The driver's cuOccupancyMaxActiveClusters for this config's launch (how many clusters fit the GPU at once)."""
    from cuda.bindings import driver

    func = _function(torch.cuda.current_device(), minb, lookahead, mbar)
    conf = driver.CUlaunchConfig()
    conf.gridDimX, conf.gridDimY, conf.gridDimZ = cluster, kv_heads, batch
    conf.blockDimX, conf.blockDimY, conf.blockDimZ = 32 * warps, 1, 1
    conf.sharedMemBytes = 0
    a = driver.CUlaunchAttribute()
    a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
    a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = cluster, 1, 1
    conf.attrs = [a]
    conf.numAttrs = 1
    (n,) = _check(driver.cuOccupancyMaxActiveClusters(func, conf), "cuOccupancyMaxActiveClusters")
    return int(n)
