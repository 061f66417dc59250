"""--kv-cache-bytes sizes the KV cache alone, on every device (engine/factory.py); sampling_reserve_bytes estimates
what a full batch's logits and their sampling take at their peak (no copy of the sampling rows: the sampler reads them
in place), and on CUDA the engine warns once at start-up when the device memory left free after the build is below it
plus the CUDA graphs' shared logits buffer (graph_reserve: test_graph_reserve.py) (headroom_warning: the pure decision;
check_sampling_headroom: its shell around torch.cuda.mem_get_info plus the caching allocator's reserved but
unallocated bytes, faked here)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from inlaid_worker.engine import factory
from inlaid_worker.engine.device_sampler import sampler_scratch_bytes
from inlaid_worker.engine.graph_reserve import shared_logits_bytes

MIB = 1 << 20


def _options(device: str, kv: int, seqs: int = 256) -> factory.EngineOptions:
    return factory.EngineOptions(device=device, kv_cache_bytes=kv, max_num_seqs=seqs)


def test_the_reserve_is_the_float32_logits_and_the_larger_of_widening_or_scratch() -> None:
    v, s = 32000, 256
    scratch = sampler_scratch_bytes(v, s)
    logits = s * v * 4
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # widening (2 B an entry) < scratch at 32k
        assert factory.sampling_reserve_bytes(v, s, dtype) == logits + scratch
    assert factory.sampling_reserve_bytes(v, 1, torch.float16) == 4 * v + sampler_scratch_bytes(v, 1)
    # 7B-like: 32000 x 256 rows: 31.25 MiB of logits, 63.7 MiB of sampler scratch (126.1 MiB with the engine's old
    # copy of the sampling rows, 31.13 MiB, which it no longer makes)
    assert round(factory.sampling_reserve_bytes(v, s, torch.float16) / MIB, 1) == 95.0
    # a 128k vocabulary at 256 rows: the bf16 LM head output being widened (62.6 MiB) outgrows the scratch (59.0 MiB)
    big = 128256
    assert sampler_scratch_bytes(big, s) < s * big * 2
    assert factory.sampling_reserve_bytes(big, s, torch.bfloat16) == s * big * 4 + s * big * 2
    assert factory.sampling_reserve_bytes(big, s, torch.float32) == s * big * 4 + sampler_scratch_bytes(big, s)
    assert round(factory.sampling_reserve_bytes(big, s, torch.bfloat16) / MIB, 1) == 187.9  # was 309.0 with the copy


def test_headroom_warning_names_the_flags_only_when_free_memory_is_short() -> None:
    reserve = factory.sampling_reserve_bytes(32000, 256, torch.float16)
    rest = {"reserve_bytes": reserve, "kv_cache_bytes": 8 << 30, "max_num_seqs": 256, "vocab": 32000}
    assert factory.headroom_warning(free_bytes=reserve, **rest) is None
    assert factory.headroom_warning(free_bytes=80 << 30, **rest) is None
    with pytest.raises(TypeError):  # keyword-only: five ints in a row are easy to swap
        factory.headroom_warning(reserve, reserve, 8 << 30, 256, 32000)  # type: ignore[misc]
    message = factory.headroom_warning(free_bytes=reserve - 1, **rest)
    assert message is not None
    assert "--kv-cache-bytes" in message and "--max-num-seqs" in message
    assert "8192.0 MiB" in message and "256 rows" in message and "32000-token" in message
    assert f"{reserve / MIB:.1f} MiB" in message and "CUDA graphs" not in message
    graphs = shared_logits_bytes(32000, 256)  # the CUDA graphs' one logits buffer: counted on top of the reserve
    assert graphs == 31.25 * MIB
    assert factory.headroom_warning(free_bytes=reserve + graphs, graph_bytes=graphs, **rest) is None
    message = factory.headroom_warning(free_bytes=reserve + graphs - 1, graph_bytes=graphs, **rest)
    assert message is not None and "plus 31.2 MiB for the CUDA graphs' shared logits buffer" in message


def test_the_cuda_check_warns_once_and_skips_other_devices(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[object] = []
    free = [1 << 40]
    cached = [0]  # the caching allocator's reserved but unallocated bytes

    def mem_get_info(device: object) -> tuple[int, int]:
        seen.append(device)
        return free[0], 2 << 40

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: (3 << 30) + cached[0])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 3 << 30)
    caplog.set_level(logging.INFO, logger=factory.__name__)
    assert factory.check_sampling_headroom(_options("cpu", 1 << 30), 32000, torch.float16) is None
    assert seen == []  # the CPU samples on the host: nothing to check
    assert factory.check_sampling_headroom(_options("cuda", 1 << 30), 32000, torch.float16) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    free[0] = 64 * MIB
    message = factory.check_sampling_headroom(_options("cuda:1", 1 << 30), 32000, torch.float16)
    assert message is not None and seen[-1] == torch.device("cuda:1")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [message]
    assert "64.0 MiB" in message
    cached[0] = 256 * MIB  # free to the engine's tensors although mem_get_info counts it as used: no warning
    assert factory.check_sampling_headroom(_options("cuda:1", 1 << 30), 32000, torch.float16) is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    cached[0] = 8 * MIB  # 72 MiB in all: still short
    message = factory.check_sampling_headroom(_options("cuda:1", 1 << 30), 32000, torch.float16)
    assert message is not None and "72.0 MiB" in message


def test_create_engine_sizes_the_cache_from_kv_cache_bytes_on_every_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from factories import make_tiny_llama
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.runner import kv_bytes_per_block

    model = make_tiny_llama(tmp_path / "m")  # vocab 320
    config = load_model_config(model)
    built: dict[str, int] = {}

    class Stop(Exception):
        pass

    def runner(model_dir, device, dtype, num_blocks, *args, **kw):  # type: ignore[no-untyped-def]
        built[device] = num_blocks
        raise Stop

    monkeypatch.setattr(factory, "ModelRunner", runner)
    kv = 8 << 20
    for device in ("cpu", "cuda"):
        with pytest.raises(Stop):
            factory.create_engine(model, _options(device, kv, seqs=64))
    assert built["cpu"] == built["cuda"] == kv // kv_bytes_per_block(config, 16, torch.float32)


def test_create_engine_logs_the_kv_cache_and_checks_the_headroom(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from factories import make_tiny_llama

    model = make_tiny_llama(tmp_path / "m")
    checked: list[tuple[str, int, int]] = []

    def check(options: factory.EngineOptions, vocab: int, dtype: torch.dtype, graph_bytes: int) -> None:
        checked.append((options.device, vocab, graph_bytes))

    monkeypatch.setattr(factory, "check_sampling_headroom", check)
    caplog.set_level(logging.INFO, logger=factory.__name__)
    engine = factory.create_engine(model, factory.EngineOptions(kv_cache_bytes=1 << 20, max_num_seqs=4))
    assert checked == [("cpu", 320, 0)]  # a CPU runner captures no CUDA graphs
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("KV cache:")]
    assert lines == [
        f"KV cache: {engine.limits.num_kv_blocks} blocks of 16 tokens ({engine.limits.num_kv_blocks * 16} tokens, "
        f"--kv-cache-bytes {1 << 20}), max_model_len {engine.limits.max_model_len}, max_num_seqs 4"
    ]
