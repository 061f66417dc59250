"""Builds an LLMEngine for a model directory: sizes the KV cache from a byte budget (on an accelerator, less what a
step's logits and their sampling may take: kv_cache_budget), loads the runner and the tokenizer, and loads PEFT
adapter directories (validated by inlaid_worker.lora)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from inlaid_worker.engine.adapters import ModelCard
from inlaid_worker.engine.device_sampler import sampler_scratch_bytes
from inlaid_worker.engine.engine import EngineLimits, LLMEngine
from inlaid_worker.engine.tokenizer import PromptTokenizer
from inlaid_worker.lora.adapter import LoraAdapter, load_adapter
from inlaid_worker.model.config import ModelConfig, load_model_config
from inlaid_worker.model.runner import ModelRunner, num_kv_blocks_for_budget

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
    num_blocks = num_kv_blocks_for_budget(config, options.block_size, dtype, kv_cache_budget(options, config, dtype))
    runner = ModelRunner(
        model_dir, options.device, dtype, num_blocks, options.block_size, options.max_gpu_adapters,
        options.backend or None,
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
    return LLMEngine(runner, tokenizer, limits, base_model_id=model_dir.name, eos_token_ids=eos)


def sampling_reserve_bytes(vocab: int, max_num_seqs: int, dtype: torch.dtype) -> int:
    """Device memory a step's sampling may take besides the KV cache, for max_num_seqs rows: their logits (the LM
    head's output in the model dtype, its float32 copy, and the engine's copy of the rows that sample) and the device
    sampler's scratch bound (device_sampler.sampler_scratch_bytes: one chunk of rows, not the batch)."""
    element = torch.empty((), dtype=dtype).element_size()
    return max_num_seqs * vocab * (element + 4 + 4) + sampler_scratch_bytes(vocab, max_num_seqs)


def kv_cache_budget(options: EngineOptions, config: ModelConfig, dtype: torch.dtype) -> int:
    """The bytes the KV cache gets: options.kv_cache_bytes, less sampling_reserve_bytes where the engine samples on
    the device (any device but the CPU, whose engine samples on the host: sampler.sample_rows), so that a full batch
    does not run out of device memory at sampling time."""
    if torch.device(options.device).type == "cpu":
        return options.kv_cache_bytes
    reserve = sampling_reserve_bytes(config.vocab_size, options.max_num_seqs, dtype)
    if options.kv_cache_bytes <= reserve:
        raise ValueError(
            f"kv_cache_bytes {options.kv_cache_bytes} leaves nothing for the KV cache: sampling {options.max_num_seqs} "
            f"rows of a {config.vocab_size}-token vocabulary reserves {reserve} bytes of it"
        )
    return options.kv_cache_bytes - reserve


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
