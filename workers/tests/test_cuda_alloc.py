"""inlaid_worker.cuda_alloc: whether kernels may use torch's pinned memory through data_ptr(), read from torch's
allocator settings under either name, and its two users (the decode graphs' mode 2 and the engine's greedy host
store) reading it there: the engine's check no longer imports the model package (session 18)."""

from __future__ import annotations

import subprocess
import sys

from inlaid_worker.cuda_alloc import pinned_host_register, pinned_pointer_ok

CONF = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"


def test_host_register_under_either_allocator_setting_name() -> None:
    assert pinned_host_register({"PYTORCH_CUDA_ALLOC_CONF": CONF}) is True
    assert pinned_host_register({"PYTORCH_ALLOC_CONF": CONF}) is True  # torch's device-neutral name
    assert pinned_host_register({"PYTORCH_CUDA_ALLOC_CONF": "", "PYTORCH_ALLOC_CONF": CONF}) is False  # CUDA's wins
    assert pinned_host_register({"PYTORCH_CUDA_ALLOC_CONF": "pinned_use_cuda_host_register:False"}) is False
    assert pinned_host_register({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True, pinned_use_cuda_host_register: TRUE"}) is True  # fmt: skip
    assert pinned_host_register({}) is False
    assert pinned_pointer_ok({"PYTORCH_ALLOC_CONF": CONF}) is False and pinned_pointer_ok({}) is True


def test_the_greedy_host_store_follows_it_under_either_name() -> None:
    from inlaid_worker.engine.async_step import GREEDY_COPY, greedy_mode

    assert greedy_mode({"PYTORCH_CUDA_ALLOC_CONF": CONF}) == 1  # the kernel, then a copy: no store through data_ptr()
    assert greedy_mode({"PYTORCH_ALLOC_CONF": CONF}) == 1
    assert greedy_mode({}) == GREEDY_COPY == 2


def test_the_engines_check_imports_no_model_code() -> None:
    code = (
        "import sys\n"
        "from inlaid_worker.engine.async_step import greedy_mode\n"
        "greedy_mode({})\n"
        "print(sorted(m for m in sys.modules if m.startswith('inlaid_worker.model')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
