"""ModelRunner.execute_device: execute's logits left on the runner's device, through every path a step can take
(eager, prefill graphs, decode graphs on CUDA), and an engine that samples them there. Skipped parts without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.runner import ModelRunner

BS = 4
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
                                              pytest.mark.gpu])]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_device_logits_equal_the_host_logits_on_every_path(tmp_path: Path, device: str) -> None:
    model = make_tiny_llama(tmp_path / "m")
    backend = "triton" if device == "cuda" else "torch"
    dtype = torch.float16 if device == "cuda" else torch.float32
    runner = ModelRunner(model, device=device, dtype=dtype, num_kv_blocks=64, block_size=BS, backend=backend)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 300, (12,), generator=g).tolist() for _ in range(3)]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(3)]
    steps = [[(s[:10], 0, tables[i], -1) for i, s in enumerate(seqs)]]  # prefill
    steps += [[([s[pos]], pos, tables[i], -1) for i, s in enumerate(seqs)] for pos in (10, 11)]  # decode
    for chunks in steps:
        host = runner.execute(make_step(chunks, BS)).clone()  # writes the step's KV; the second run rewrites it
        dev = runner.execute_device(make_step(chunks, BS))
        assert dev.device.type == device and dev.dtype == torch.float32 and dev.shape == host.shape
        tol = 0.0 if device == "cpu" else 1e-3  # the GPU may reorder a reduction between two runs
        torch.testing.assert_close(dev.cpu(), host, rtol=tol, atol=tol)
    if device == "cuda":
        assert runner.graph_captures >= 1  # the decode steps replayed a graph
