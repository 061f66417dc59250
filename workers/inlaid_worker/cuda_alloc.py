"""What torch's allocator settings say about pinned host memory, for the kernels that read or write it through its
pointer (pinned memory is mapped into the device's address space under UVA, so a kernel may use data_ptr()).

Two users read it: the decode graphs' first kernel, which reads the pinned staging buffer (model.decode_graphs,
GRAPH_INPUT 2), and the engine's greedy kernel, which stores the tokens into the pinned host buffer
(engine.async_step.greedy_mode). Neither package owns the check, so it lives here, importing neither (the engine
read it from model.decode_graphs before session 18).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def pinned_host_register(env: Mapping[str, str]) -> bool:
    """Whether torch pins host memory with cudaHostRegister: pinned_use_cuda_host_register in its allocator settings,
    read as torch reads them (PYTORCH_CUDA_ALLOC_CONF where set, else the device-neutral PYTORCH_ALLOC_CONF)."""
    conf = env["PYTORCH_CUDA_ALLOC_CONF"] if "PYTORCH_CUDA_ALLOC_CONF" in env else env.get("PYTORCH_ALLOC_CONF", "")
    return "pinned_use_cuda_host_register:true" in conf.replace(" ", "").lower()


def pinned_pointer_ok(env: Mapping[str, str] | None = None) -> bool:
    """Whether a kernel may read or write torch's pinned memory at its data_ptr(): not when torch pins with
    cudaHostRegister, whose device address need not equal the host pointer on every platform
    (cudaDevAttrCanUseHostPointerForRegisteredMem). env: os.environ unless given."""
    return not pinned_host_register(os.environ if env is None else env)
