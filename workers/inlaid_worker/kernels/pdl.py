"""Programmatic Dependent Launch (PDL, Hopper and later) for the decode step's Triton kernels.

A decode step is ~300 small kernels; inside a CUDA graph each still starts only when the previous one has fully
finished (an empty kernel costs ~1 us there) and every GEMV ramps its DRAM stream up from zero. With PDL a kernel
is launched with the attribute "programmatic stream serialization" (Triton: the launch option `launch_pdl=True`):
it may start as soon as every program of the previous kernel has executed `griddepcontrol.launch_dependents`
(or exited), and `griddepcontrol.wait` then blocks until the previous kernel has completed and its memory is
visible. Each PDL-launched kernel here takes a constexpr USE_GDC and follows these rules:

- everything an earlier kernel may write (activations, the KV cache, split-K workspaces and counters, block
  tables, positions, LoRA buffers) is read only after `gdc_wait`, in EVERY program (a kernel whose programs all
  skip the wait could complete before its predecessor, and the next kernel's wait would then not cover it);
- every store and atomic comes after `gdc_wait` too (the previous kernel may still read the buffer: the graph's
  memory pool reuses freed activations, and the GEMVs share one split-K workspace);
- only weights (packed words, scales, zeros, norm weights, the LoRA pools' A / B, ranks, scalings), which no
  kernel of a step writes, may be loaded before the wait: that is the point, the next GEMV streams its first tile
  while the previous kernel finishes. One more exception: the LoRA kernels (lora_fused) read their row metadata
  (the decode graph's staged buffer: copied in before the replay, or under decode_graphs' GRAPH_INPUT 1-2 written by
  the graph's first kernel, stage_in, which is followed by the embedding's plain launch) before the wait, to address
  their first A / B tile; that holds because only decode graphs enter a PDL scope and every PDL kernel of a graph
  starts after that staging is complete.
Waiting is transitive: a kernel's wait returns only when the previous kernel completed, which itself waited.
A graph may also branch: at buckets 3-16 the LoRA shrink runs on a forked stream beside the base GEMV
(kernels.lora_early, "fork"): the shrink's only predecessor is the kernel that wrote x (through the fork's event), and
the expand has two, the GEMV and the shrink (the join); every kernel still waits before reading or storing, so each
path stays transitive. The DOT dump shows those edges but not whether the captured join keeps a programmatic edge.
Kernels launched without PDL (torch ops, cuBLAS, quant_tcl, the v zero-fill before the LoRA shrink above lora_fused.PARTIALS_MAX_ROWS rows) need no change:
they start after everything before them, as always. The Gluon tensor-core GEMVs (quant_tcg) use this module's
Gluon twins (ggdc_*: the same griddepcontrol PTX through Gluon's inline asm).

USE_GDC (constexpr): 0 = off (the same operations as before; the GEMVs' sm_90 SASS is identical, checked offline
for the 7B batch-1 configs); 1 = let dependents launch at the kernel's
very start (before its own wait, so a chain of small kernels lets the next GEMV start streaming its weights while
an earlier GEMV still runs; at most one wave of each kernel waits, since a kernel's dependents launch only once all
its programs have started); 2 = let dependents launch only after the main loop; 3 = mode 1 without the GEMVs'
weight prefetch (they wait first thing: an ablation that shows what the prefetch adds). Scope mode 4 ("mixed") is
mode 1 for every kernel but the tensor-core GEMVs, which get 2 (launch_kw(tensor_core=True)). Launch sites take
`launch_kw()` (USE_GDC plus launch_pdl) and apply it only while `scope(mode)` is active: decode CUDA graphs
(model.decode_graphs) enter it during their warm-up and capture when the runner's `decode_pdl` is on (default:
env INLAID_PDL, modes as above; ON (1) unless set to 0), for the buckets of decode_graphs' policy (buckets <= 16,
with or without LoRA). It is ignored without CUDA, below compute capability 9 and under TRITON_INTERPRET (the interpreter must never
execute griddepcontrol; there the instructions are skipped, so CPU tests can run the PDL code paths).

Measured on the H200 (bench/results/decode-2026-11-30-pdl.md, same runner, modes alternating): a 256-kernel chain
in a torch CUDA graph 1.21 -> 0.85 us per kernel (the programmatic edges survive capture); the 7B int4 decode step
at batch 1 2.14 -> 1.95 ms (1.09x; 2.27x -> 2.07x the roofline), batch 2 1.11x, 13B batch 1 1.10x; batches 4-32
(tensor-core Gluon GEMVs between the PDL kernels) 0.92-1.0x, hence the policy. Mode 2: 1.03-1.04x; mode 3 (no
weight prefetch): 1.06x at batch 1, so about a third of mode 1's gain is the GEMVs' early weight loads.
With the LoRA and tensor-core kernels PDL-aware (bench/results/decode-2026-11-30-pdl2.md, two runs): mode 1 at
7B int4 batch 1-16 1.01-1.12x without adapters and 1.04-1.13x with rank-16 q/k/v/o adapters (batch 1 2.54 ->
2.25 ms), batch 32 0.99-1.01x; 7B int3 batch 1 / 2 / 8 1.09x / 1.10x / 1.05x. Mode 4 matched mode 1 within
run-to-run noise except batch 4 without adapters (1.07x vs 1.03x, one run); the tensor-core GEMVs launched plainly (env
INLAID_PDL_TCG=0) gave 1.00x at batch 4-16, so the earlier batch-8 loss did not reproduce.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

MODES = (0, 1, 2, 3, 4)


class _Mode(threading.local):
    """The active mode (set by scope), per thread: a kernel another thread launches meanwhile (e.g. an onboarding
    re-quantization in thread mode) never inherits a decode graph's PDL."""

    value = 0


_MODE = _Mode()
# under TRITON_INTERPRET the griddepcontrol instructions are skipped (the interpreter cannot run them), so CPU tests
# may launch a kernel with USE_GDC 1-3 directly and check its PDL code path (the loads reordered around the wait)
_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """CUDA with compute capability >= 9 and not interpreting."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


def env_mode() -> int:
    """INLAID_PDL: 1 / on (default: dependents launch at kernel start), 0 / off, 2 (after the main loop),
    3 (mode 1 without the GEMVs' weight prefetch: an ablation), 4 / mixed (mode 1, but the tensor-core GEMVs of
    quant_tcg let dependents launch only after their K loop)."""
    raw = os.environ.get("INLAID_PDL", "1").strip().lower()
    mode = {"": 1, "off": 0, "false": 0, "no": 0, "on": 1, "true": 1, "yes": 1, "start": 1, "end": 2,
            "mixed": 4}.get(raw)  # fmt: skip
    if mode is None:
        mode = int(raw) if raw.isdigit() else -1
    if mode not in MODES:
        raise ValueError(f"INLAID_PDL must be one of 0, 1, 2, 3, 4 (or off/on/end/mixed), got {raw!r}")
    return mode


def check_mode(mode: int) -> int:
    if mode not in MODES:
        raise ValueError(f"PDL mode must be one of {MODES}, got {mode!r}")
    return int(mode)


def mode() -> int:
    """The mode launches use now: scope's, or 0 where PDL is not supported."""
    return _MODE.value


@contextlib.contextmanager
def scope(requested: int) -> Iterator[int]:
    """Within: the kernels that support it launch with PDL in `requested` mode (0 where unsupported)."""
    prev = _MODE.value
    _MODE.value = check_mode(requested) if supported() else 0
    try:
        yield _MODE.value
    finally:
        _MODE.value = prev


_OFF = {"USE_GDC": 0}
_ON = ({"USE_GDC": 0}, *({"USE_GDC": m, "launch_pdl": True} for m in (1, 2, 3)))


def launch_kw(tensor_core: bool = False) -> dict:
    """Keyword arguments for a PDL-aware kernel launch: USE_GDC (the kernels know 0-3), and launch_pdl when on.
    Mode 4 is mode 1 for every kernel but the tensor-core GEMVs (`tensor_core`: quant_tcg), which get mode 2."""
    m = _MODE.value
    if m == 4:
        return _ON[2] if tensor_core else _ON[1]
    return _ON[m] if m else _OFF


@triton.jit
def gdc_wait(USE_GDC: tl.constexpr):
    """Before reading anything a previous kernel wrote, and before any store (no-op when USE_GDC is 0)."""
    if USE_GDC and not _INTERPRETED:
        tl.extra.cuda.gdc_wait()


@triton.jit
def gdc_start(USE_GDC: tl.constexpr):
    """Modes 1 and 3: let the next kernel launch now (call at the kernel's start)."""
    if (USE_GDC == 1 or USE_GDC == 3) and not _INTERPRETED:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def gdc_wait_first(USE_GDC: tl.constexpr):
    """A GEMV's wait at its very start: mode 3 only (the no-prefetch ablation)."""
    if USE_GDC == 3:
        gdc_wait(USE_GDC)


@triton.jit
def gdc_wait_prefetched(USE_GDC: tl.constexpr):
    """A GEMV's wait after its first weight loads: modes 1 and 2."""
    if USE_GDC == 1 or USE_GDC == 2:
        gdc_wait(USE_GDC)


@triton.jit
def gdc_late(USE_GDC: tl.constexpr):
    """Mode 2: let the next kernel launch now (call after the main loop, before the epilogue)."""
    if USE_GDC == 2 and not _INTERPRETED:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def gdc_enter(USE_GDC: tl.constexpr):
    """gdc_start + gdc_wait: the head of a kernel that preloads nothing."""
    gdc_start(USE_GDC)
    gdc_wait(USE_GDC)


# Gluon twins (quant_tcg's tensor-core GEMVs; Gluon kernels never run under the interpreter): Gluon cannot call
# triton.language's gdc_* (a different builder), so the same PTX through Gluon's inline asm (as tl.extra.cuda does)
_WAIT_ASM = gl.constexpr("griddepcontrol.wait; // dummy $0")
_LAUNCH_ASM = gl.constexpr("griddepcontrol.launch_dependents; // dummy $0")


@gluon.jit
def ggdc_wait(USE_GDC: gl.constexpr):
    if USE_GDC:
        gl.inline_asm_elementwise(_WAIT_ASM, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def ggdc_start(USE_GDC: gl.constexpr):
    if USE_GDC == 1 or USE_GDC == 3:
        gl.inline_asm_elementwise(_LAUNCH_ASM, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def ggdc_wait_first(USE_GDC: gl.constexpr):
    if USE_GDC == 3:
        ggdc_wait(USE_GDC)


@gluon.jit
def ggdc_wait_prefetched(USE_GDC: gl.constexpr):
    if USE_GDC == 1 or USE_GDC == 2:
        ggdc_wait(USE_GDC)


@gluon.jit
def ggdc_late(USE_GDC: gl.constexpr):
    if USE_GDC == 2:
        gl.inline_asm_elementwise(_LAUNCH_ASM, "=r", [], dtype=gl.int32, is_pure=False, pack=1)
