"""Builds an LLMEngine for a model directory: sizes the KV cache from a byte budget (--kv-cache-bytes: the KV cache
alone), loads the runner and the tokenizer, and loads PEFT adapter directories (validated by inlaid_worker.lora). At
start-up it logs the KV blocks and max_model_len, and on CUDA warns once when the free device memory left after the
build is below what sampling a full batch may take (sampling_reserve_bytes) plus the one logits buffer shared by the
CUDA graphs that later steps capture (graph_reserve.graph_logits_bytes; check_sampling_headroom)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from inlaid_worker.engine.adapters import ModelCard
from inlaid_worker.engine.device_sampler import sampler_scratch_bytes
from inlaid_worker.engine.engine import EngineLimits, LLMEngine
from inlaid_worker.engine.graph_reserve import graph_logits_bytes
from inlaid_worker.engine.tokenizer import PromptTokenizer
from inlaid_worker.lora.adapter import LoraAdapter, load_adapter
from inlaid_worker.model.config import ModelConfig, load_model_config
from inlaid_worker.model.runner import ModelRunner, num_kv_blocks_for_budget

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    dtype: str = "float32"
    kv_cache_bytes: int = 64 * 1024 * 1024
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int = 0  # 0 = the model's max_position_embeddings, capped by the KV cache
    max_gpu_adapters: int = 64  # adapters resident on the device at once; more may be registered (host memory)
    backend: str = ""  # "torch" | "triton"; "" = triton on CUDA, torch elsewhere
    enable_prefix_caching: bool = True  # reuse the KV of shared prompt prefixes (engine/prefix_cache.py)


def create_engine(model_dir: str | Path, options: EngineOptions) -> LLMEngine:
    model_dir = Path(model_dir)
    if options.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {options.dtype!r}")
    dtype = DTYPES[options.dtype]
    config = load_model_config(model_dir)
    num_blocks = num_kv_blocks_for_budget(config, options.block_size, dtype, options.kv_cache_bytes)
    runner = ModelRunner(
        model_dir, options.device, dtype, num_blocks, options.block_size, options.max_gpu_adapters,
        options.backend or None, max_num_seqs=options.max_num_seqs,
    )
    max_len = min(config.max_position_embeddings, num_blocks * options.block_size)
    if options.max_model_len:
        max_len = min(max_len, options.max_model_len)
    limits = EngineLimits(
        options.block_size, num_blocks, options.max_num_seqs, options.max_num_batched_tokens, max_len,
        options.max_gpu_adapters, options.enable_prefix_caching,
    )
    tokenizer = PromptTokenizer.from_model_dir(model_dir)
    eos = set(config.eos_token_ids) | tokenizer.eos_token_ids | _generation_eos(model_dir)
    engine = LLMEngine(runner, tokenizer, limits, base_model_id=model_dir.name, eos_token_ids=eos)
    tokens = num_blocks * options.block_size
    log.info("KV cache: %d blocks of %d tokens (%d tokens, --kv-cache-bytes %d), max_model_len %d, max_num_seqs %d",
             num_blocks, options.block_size, tokens, options.kv_cache_bytes, max_len, options.max_num_seqs)  # fmt: skip
    graphs = graph_logits_bytes(runner, int(runner.weights.lm_head.shape[0]))  # the buffer's columns: LM head rows
    check_sampling_headroom(options, config.vocab_size, dtype, graph_bytes=graphs)
    return engine


def sampling_reserve_bytes(vocab: int, max_num_seqs: int, dtype: torch.dtype) -> int:
    """An estimate of the device memory one step's logits and their sampling take at their peak, for max_num_seqs
    logits rows (one per scheduled sequence): an eager step's float32 logits [S, V] (its LM head output widened to
    float32) and the larger of the LM head's output in the model dtype while it is widened (S V entries of dtype's
    size; none for float32) and the device sampler's scratch bound (device_sampler.sampler_scratch_bytes; the two are
    never alive at once). The sampler reads the rows that sample in place when some rows do not (engine._postprocess
    passes their indices): no copy of them is made. Not counted here: activations, prompt-logprobs blocks, the CUDA
    graphs' one shared float32 logits buffer that graph steps write instead (model.graph_logits; that is
    graph_reserve.graph_logits_bytes, which the start-up check adds), the CUDA allocator's rounding and
    fragmentation."""
    widen = 0 if dtype == torch.float32 else max_num_seqs * vocab * dtype.itemsize
    return max_num_seqs * vocab * 4 + max(widen, sampler_scratch_bytes(vocab, max_num_seqs))


def headroom_warning(
    *, free_bytes: int, reserve_bytes: int, kv_cache_bytes: int, max_num_seqs: int, vocab: int, graph_bytes: int = 0
) -> str | None:
    """The start-up warning when the device memory free after the engine was built (KV cache and weights allocated)
    is below reserve_bytes (sampling_reserve_bytes) plus graph_bytes (graph_reserve.graph_logits_bytes: the shared
    logits buffer of the CUDA graphs that later steps capture); None when it is not."""
    if free_bytes >= reserve_bytes + graph_bytes:
        return None
    mib = 1 << 20
    graphs = (
        f", plus {graph_bytes / mib:.1f} MiB for the CUDA graphs' shared logits buffer (allocated by the first capture)"
        if graph_bytes
        else ""
    )
    return (
        f"only {free_bytes / mib:.1f} MiB of device memory is free after the KV cache ({kv_cache_bytes / mib:.1f} MiB, "
        f"--kv-cache-bytes) and the weights were allocated, but sampling a full batch of {max_num_seqs} rows "
        f"(--max-num-seqs) of a {vocab}-token vocabulary may take {reserve_bytes / mib:.1f} MiB (float32 logits and "
        f"the sampler's scratch){graphs}, besides activations: large batches may run out of device memory; "
        f"lower --kv-cache-bytes or --max-num-seqs"
    )


def check_sampling_headroom(options: EngineOptions, vocab: int, dtype: torch.dtype, graph_bytes: int = 0) -> str | None:
    """On a CUDA device (free: mem_get_info's free bytes plus the caching allocator's reserved but unallocated
    bytes): logs headroom_warning once (a warning) when it has one, and returns it; elsewhere None. graph_bytes: the
    shared logits buffer of the CUDA graphs captured after start-up (graph_reserve.graph_logits_bytes)."""
    device = torch.device(options.device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    # the caching allocator's reserved-but-unused blocks are free to the engine's tensors too (mem_get_info counts
    # them as used)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    reserve = sampling_reserve_bytes(vocab, options.max_num_seqs, dtype)
    message = headroom_warning(free_bytes=free, reserve_bytes=reserve, kv_cache_bytes=options.kv_cache_bytes,
                               max_num_seqs=options.max_num_seqs, vocab=vocab, graph_bytes=graph_bytes)  # fmt: skip
    if message is not None:
        log.warning(message)
    else:
        log.info("device memory free after the build: %.1f MiB (sampling may take %.1f MiB, the CUDA graphs' logits "
                 "buffer %.1f MiB)", free / 2**20, reserve / 2**20, graph_bytes / 2**20)  # fmt: skip
    return message


def _generation_eos(model_dir: Path) -> set[int]:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return set()
    eos = json.loads(path.read_text()).get("eos_token_id")
    return set(eos) if isinstance(eos, list) else ({int(eos)} if eos is not None else set())


def read_adapter(path: str | Path, config: ModelConfig, model_dir: str | Path) -> LoraAdapter:
    """Loads and validates a PEFT adapter directory for this base model (raises lora.AdapterError)."""
    return load_adapter(path, config, expected_base=str(model_dir))


def add_adapter_dir(engine: LLMEngine, name: str, path: str | Path, model_dir: str | Path) -> ModelCard:
    adapter = read_adapter(path, engine.runner.config, model_dir)  # type: ignore[attr-defined]
    return engine.add_adapter(name, adapter, adapter.rank, tuple(sorted(adapter.targets)))


def adapter_dirs(adapters_dir: str | Path) -> dict[str, Path]:
    """Task name -> adapter directory, for every subdirectory of `adapters_dir` (sorted by name)."""
    root = Path(adapters_dir)
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
