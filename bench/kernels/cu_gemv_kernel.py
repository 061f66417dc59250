"""CUDA C++ int4 GEMM for M = 1..16 (cu_gemv.cu): NVRTC-compiled at run time through cuda-python (cuda.bindings; nvcc
when the NVRTC library is missing), launched with cuLaunchKernelEx on torch's current stream (CUDA-graph capturable),
with the PDL launch attribute inside a pdl.scope (kernel: weights copied before griddepcontrol.wait, x and y after) and
a thread-block cluster along K when the config splits K over blocks (reduced through distributed shared memory: no
global workspace, no counters).

Weight: the 4-bit GPTQ qweight, scales and zeros repacked once (cu_gemv_pack: exact; cached per qweight tensor here,
or passed in); act-order through the load-time permutation (x gathered by perm). Config (CuConfig): wn warps along N
(one 16-column tile each), wk warps splitting the block's K range, cs blocks of a cluster splitting K (<= 8), ring =
cp.async stages per warp (ring - 1 chunks of 64 rows in flight).
Without CUDA, cuda-python or a compiler, `available()` is False and nothing here touches them (imports are lazy).

Status (bench/results/kernels-2026-11-30-s10-cuda*.md, H200): correct (fp16 <= 2.1e-4, bf16 <= 1.7e-3 vs the fp32
dequantized product), but slower than the shipped Triton picks at every M = 1..16 on the 7B shapes (1.2-3.5x), so it is
a bench-only module (here under bench/kernels, beside cu_gemv.cu and cu_gemv_pack.py, with bench/kernels and workers
on sys.path; moved out of the worker package in session 17), not a quant_matmul candidate. Its own read path streams at ~2 TB/s (read-only diagnostic 11-12 us
for 7B up at M = 1) and the arithmetic is not hidden behind it (+3.5 us).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from cu_gemv_pack import repack_qweight, repack_scales, repack_zeros, supports
from inlaid_worker.kernels import pdl
from inlaid_worker.kernels.gptq_packing import GPTQWeight

SOURCE = Path(__file__).with_name("cu_gemv.cu")
MAX_THREADS = 512  # the kernel's __launch_bounds__
MAX_CLUSTER = 8  # portable cluster size
RINGS = (4, 8, 16)  # cp.async stages per warp (ring - 1 chunks in flight)
STAGE_BYTES = 768  # per stage and warp: 512 B of words, 128 B of scale pairs, 128 B of zero words
MAX_SMEM = 200 * 1024


@dataclass(frozen=True)
class CuConfig:
    wn: int = 4
    wk: int = 2
    cs: int = 1
    ring: int = 8

    def __post_init__(self) -> None:
        if self.wn < 1 or self.wk < 1 or self.wn * self.wk * 32 > MAX_THREADS:
            raise ValueError(f"wn * wk warps must be 1..{MAX_THREADS // 32}, got {self.wn} x {self.wk}")
        if not 1 <= self.cs <= MAX_CLUSTER:
            raise ValueError(f"cluster size must be 1..{MAX_CLUSTER}, got {self.cs}")
        if self.ring not in RINGS:
            raise ValueError(f"ring must be one of {RINGS}, got {self.ring}")


def row_block(m: int) -> int:
    """Rows of x per MMA group: 8 (one MMA per weight tile) up to M = 8, else 16 (two)."""
    if not 1 <= m <= 16:
        raise ValueError(f"the CUDA GEMV takes 1 <= M <= 16, got {m}")
    return 8 if m <= 8 else 16


def grid_of(n: int, cfg: CuConfig) -> int:
    """Blocks: ceil(N/16 / wn) column strips x cs cluster ranks (clusters run along x)."""
    return -(-(n // 16) // cfg.wn) * cfg.cs


def smem_bytes(k: int, m: int, cfg: CuConfig) -> int:
    """The warps' cp.async rings + x of the block's K range in fragment order (chunks x 4 K16 steps x M rows x 32 B) +
    the fp32 reduction [wn * 16][MB]."""
    chunks = -(-(k // 64) // cfg.cs)
    return cfg.wn * cfg.wk * cfg.ring * STAGE_BYTES + chunks * 4 * m * 32 + cfg.wn * 16 * row_block(m) * 4


def x_bytes_per_call(n: int, k: int, m: int, cfg: CuConfig) -> int:
    """x traffic from L2: every column strip reads all of x's K (the reason wn grows with M)."""
    return -(-(n // 16) // cfg.wn) * m * k * 2


def candidates(n: int, k: int, m: int, max_x_share: float = 0.5) -> list[CuConfig]:
    """Configs worth timing for (N, K, M): 4-16 warps, x's L2 traffic at most max_x_share of the weight bytes, 128-2000
    blocks, every warp of a block with at least one chunk, shared memory <= MAX_SMEM; every ring depth."""
    out = []
    kc = k // 64
    for wn in (1, 2, 4, 8, 16):
        for wk in (1, 2, 4):
            if wn * wk not in (4, 8, 16):
                continue
            for cs in (1, 2, 4, 8):
                for ring in RINGS:
                    c = CuConfig(wn, wk, cs, ring)
                    blocks = grid_of(n, c)
                    if x_bytes_per_call(n, k, m, c) > max_x_share * k * n / 2 or not 128 <= blocks <= 2000:
                        continue
                    if kc // cs < wk or smem_bytes(k, m, c) > MAX_SMEM:
                        continue
                    out.append(c)
    return out


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """CUDA (compute capability >= 9), cuda-python's driver and NVRTC bindings, and not under the Triton interpreter."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability()[0] < 9:
        return False
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return False
    return True


def _check(result: tuple, what: str) -> tuple:
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err!r}")
    return result[1:]


def _kernel_name(mb: int, ring: int, cl: bool, sym: bool, perm: bool, bf16: bool) -> str:
    """The instantiation's macro call (cu_gemv.cu's CU_GEMV_INSTANCE: an extern "C" kernel cu_gemv_inst)."""
    b = lambda v: "true" if v else "false"  # noqa: E731
    return f"CU_GEMV_INSTANCE({mb}, {ring}, {b(cl)}, {b(sym)}, {b(perm)}, {b(bf16)})"


def _arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}{'a' if major == 9 else ''}"


def _source(name: str) -> bytes:
    return SOURCE.read_bytes() + f"\n{name}\n".encode()


def _nvrtc_cubin(name: str) -> bytes:
    from cuda.bindings import nvrtc

    (prog,) = _check(nvrtc.nvrtcCreateProgram(_source(name), b"cu_gemv.cu", 0, [], []), "nvrtcCreateProgram")
    opts = [f"--gpu-architecture={_arch()}".encode(), b"-std=c++17"]
    (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if int(res) != 0:
        (size,) = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        raise RuntimeError(f"NVRTC failed for {name}:\n{log.decode(errors='replace')}")
    (size,) = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
    cubin = b" " * size
    _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    nvrtc.nvrtcDestroyProgram(prog)
    return cubin


def _nvcc_cubin(name: str) -> bytes:
    """Fallback where cuda-python's NVRTC library is missing: nvcc -cubin (when on PATH)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "k.cu", Path(d) / "k.cubin"
        src.write_bytes(_source(name))
        subprocess.run(["nvcc", f"-arch={_arch()}", "-std=c++17", "-cubin", "-o", str(out), str(src)], check=True,
                       capture_output=True)  # fmt: skip
        return out.read_bytes()


COMPILER: list[str] = []  # which compiler built the loaded functions ("nvrtc" / "nvcc"), for the benches


@functools.lru_cache(maxsize=64)
def _function(name: str, device: int):  # type: ignore[no-untyped-def]
    """Compile one instantiation (NVRTC, else nvcc) to a cubin for this GPU, load it; its CUfunction (per process)."""
    from cuda.bindings import driver

    torch.cuda.init()
    torch.cuda.current_stream(device)  # the primary context is current from here on
    torch.zeros(1, device=f"cuda:{device}")
    try:
        cubin, how = _nvrtc_cubin(name), "nvrtc"
    except (ImportError, OSError, RuntimeError) as exc:
        if shutil.which("nvcc") is None:
            raise
        cubin, how = _nvcc_cubin(name), f"nvcc (NVRTC: {exc!r:.300})"
    COMPILER.append(how)
    (module,) = _check(driver.cuModuleLoadData(cubin), "cuModuleLoadData")
    (func,) = _check(driver.cuModuleGetFunction(module, b"cu_gemv_inst"), "cuModuleGetFunction")
    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    _check(driver.cuFuncSetAttribute(func, attr, MAX_SMEM), "cuFuncSetAttribute")
    # all of the unified L1 / shared memory as shared memory: the rings are the occupancy limit (the default carveout
    # may leave room for one block per SM)
    carve = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
    _check(driver.cuFuncSetAttribute(func, carve, 100), "cuFuncSetAttribute")
    _MODULES.append(module)  # keep the module loaded
    return func


_MODULES: list = []


def compile_all(names: list[str]) -> float:
    """Compile the given instantiations now (each its own NVRTC program); seconds taken."""
    import time

    t0 = time.time()
    for n in names:
        _function(n, torch.cuda.current_device())
    return time.time() - t0


def instantiation(m: int, cfg: CuConfig, w: GPTQWeight, dtype: torch.dtype) -> str:
    return _kernel_name(row_block(m), cfg.ring, cfg.cs > 1, w.sym, w.perm is not None, dtype == torch.bfloat16)


Packed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # qweight, scales, zeros in the kernel's layouts
_REPACKED: dict[int, Packed] = {}


def repack(w: GPTQWeight) -> Packed:
    """The load-time repack (exact): qweight into fragment order, scales into lane pairs, zeros into lane bytes."""
    return repack_qweight(w.qweight), repack_scales(w.scales), repack_zeros(w.qzeros, w.out_features)


def repacked(w: GPTQWeight) -> Packed:
    """repack(w), made once per qweight tensor and dropped with it (a weakref finalizer, so a later tensor at the same
    address never sees a stale copy)."""
    key = id(w.qweight)
    packed = _REPACKED.get(key)
    if packed is None:
        packed = repack(w)
        _REPACKED[key] = packed
        weakref.finalize(w.qweight, _REPACKED.pop, key, None)
    return packed


def blocks_per_sm(m: int, k: int, cfg: CuConfig, w: GPTQWeight, dtype: torch.dtype) -> int:
    """The driver's occupancy for this instantiation and config (resident blocks per SM)."""
    from cuda.bindings import driver

    func = _function(instantiation(m, cfg, w, dtype), torch.cuda.current_device())
    (n,) = _check(
        driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(func, 32 * cfg.wn * cfg.wk, smem_bytes(k, m, cfg)),
        "cuOccupancyMaxActiveBlocksPerMultiprocessor",
    )
    return int(n)


def launch_cu_gemv(x2: torch.Tensor, w: GPTQWeight, cfg: CuConfig, y: torch.Tensor,
                   packed: Packed | None = None, diag: int = 0) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W on torch's current stream (PDL and cluster launch attributes as needed)."""
    from cuda.bindings import driver

    m, k = x2.shape
    n = w.out_features
    if not supports(w):
        raise ValueError("the CUDA GEMV needs 4-bit weights, K % 64 == 0, N % 16 == 0 and group_size % 64 == 0")
    if x2.dtype not in (torch.float16, torch.bfloat16) or y.dtype != x2.dtype:
        raise ValueError("x and y must both be fp16 or both bf16")
    if x2.stride(1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:
        x2 = x2.contiguous()
    if y.stride(1) != 1:
        raise ValueError("y must have unit column stride")
    wq, sc, zr = repacked(w) if packed is None else packed
    if smem_bytes(k, m, cfg) > MAX_SMEM:
        raise ValueError(f"{cfg} needs {smem_bytes(k, m, cfg)} B of shared memory at K={k}, M={m} (max {MAX_SMEM})")
    func = _function(instantiation(m, cfg, w, x2.dtype), x2.device.index or 0)
    kw = pdl.launch_kw()
    gdc = int(kw.get("USE_GDC", 0)) | diag  # diag: the kernel's diagnostic bits (benches; 0 in production)
    perm = w.perm if w.perm is not None else w.qweight
    args = [
        ctypes.c_void_p(wq.data_ptr()), ctypes.c_void_p(sc.data_ptr()), ctypes.c_void_p(zr.data_ptr()),
        ctypes.c_void_p(perm.data_ptr()), ctypes.c_void_p(x2.data_ptr()), ctypes.c_int(x2.stride(0)),
        ctypes.c_void_p(y.data_ptr()), ctypes.c_int(y.stride(0)), ctypes.c_int(m), ctypes.c_int(n), ctypes.c_int(k),
        ctypes.c_float(64.0 / w.group_size), ctypes.c_int(w.zero_offset), ctypes.c_int(cfg.wn), ctypes.c_int(cfg.wk),
        ctypes.c_int(cfg.cs), ctypes.c_int(gdc),
    ]  # fmt: skip
    ptrs = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
    conf = driver.CUlaunchConfig()
    conf.gridDimX, conf.gridDimY, conf.gridDimZ = grid_of(n, cfg), 1, 1
    conf.blockDimX, conf.blockDimY, conf.blockDimZ = 32 * cfg.wn * cfg.wk, 1, 1
    conf.sharedMemBytes = smem_bytes(k, m, cfg)
    conf.hStream = driver.CUstream(torch.cuda.current_stream(x2.device).cuda_stream)
    attrs = []
    if kw.get("launch_pdl"):
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        a.value.programmaticStreamSerializationAllowed = 1
        attrs.append(a)
    if cfg.cs > 1:
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = cfg.cs, 1, 1
        attrs.append(a)
    conf.attrs = attrs
    conf.numAttrs = len(attrs)
    _check(driver.cuLaunchKernelEx(conf, func, ctypes.addressof(ptrs), 0), "cuLaunchKernelEx")
