"""The model runner: owns the weights, the paged KV cache and the resident LoRA adapters on one device.

Interface (what the engine uses):
    runner = ModelRunner(model_dir, device="cpu", dtype=torch.float32, num_kv_blocks=N, block_size=16,
                         max_adapters=64, backend=None,   # backend: "torch" | "triton" (None: by device)
                         cuda_graphs=True,                # triton on CUDA: decode steps replay CUDA graphs
                         decode_fusion=None,              # those graphs' llama_fast.DECODE_FUSIONS or "auto" (per
                                                          # bucket, decode_graphs.FUSION_POLICY); None: env
                                                          # INLAID_DECODE_FUSION, default "auto"
                         prefill_graphs=None,             # triton: prefill/mixed steps in bucketed CUDA graphs
                                                          # (None: on where decode steps replay graphs, i.e.
                                                          # triton on CUDA with cuda_graphs, unless env
                                                          # INLAID_PREFILL_GRAPHS=0; True without CUDA or with
                                                          # cuda_graphs=False: the padded step runs eagerly, for
                                                          # tests; steps over INLAID_PREFILL_GRAPH_MAX_TOKENS
                                                          # (1024) padded rows run eagerly: model.prefill_graphs)
                         max_num_seqs=None)               # the most sequences a step has (the engine's limit): sizes
                                                          # the graphs' one logits buffer (model.graph_logits; None:
                                                          # 256 rows); steps of more sequences run eagerly
    runner.decode_fusion = "none"       # switch it (graphs are keyed by fusion: benchmarks alternate fusions)
    runner.decode_pdl = 0               # decode graphs' Programmatic Dependent Launch mode (kernels.pdl; 0 = off;
                                        # default env INLAID_PDL, on at buckets <= 16, with or without LoRA; graphs kept per mode)
    runner.prefill_graphs = False       # switch them (off drops the captured prefill graphs)
    runner.config                       # ModelConfig (vocab_size, num_layers, eos_token_ids, ...)
    runner.kv_bytes_per_block           # bytes one KV block takes across all layers (K and V)
    runner.execute(step) -> logits      # StepInput -> [len(step.logits_indices), vocab] float32 on the CPU
                                        # (a graph-replayed step returns a view of the graphs' one pinned buffer,
                                        # valid until the next such step: model.graph_logits)
    runner.execute_device(step)         # the same logits on the runner's device (what the engine samples from)
    runner.take_prompt_logprobs()       # after a step with StepInput.prompt_rows: its model.prompt_logprobs
                                        # .PromptLogprobs (host tensors), else None. Such steps run eagerly (no
                                        # decode or prefill graph: they score rows besides the logits rows)
    runner.add_adapter(name, adapter)   # LoraAdapter or directory -> registered in host memory; its device slot
                                        # (the id for adapter_ids) when one was free, else -1
    runner.prepare_adapters(names, keep)  # {name: slot}: loads names on demand, LRU-evicting outside names+keep
    runner.remove_adapter(name)         # frees the slot; no StepInput may refer to it afterwards
    runner.adapter_slots                # {name: slot} of the resident adapters (max_adapters at most)
    runner.adapter_stats()              # residency and hit-rate counters (lora.adapter_cache.AdapterCacheStats)
    num_kv_blocks_for_budget(config, block_size, dtype, budget_bytes) -> int   # size the cache from bytes

The KV cache is one tensor [layers, 2, num_kv_blocks, block_size, kv_heads, head_dim] (2 = K, V). Block ids
in StepInput.block_tables and slot_mapping index into it; the engine's block manager owns which ids are free.
A GPTQ checkpoint directory is served dequantized by the torch backend and packed (quant_matmul) by triton.
The torch backend runs model.llama.forward (the reference); triton runs model.llama_fast.forward_fast (fused
kernels), and on CUDA its pure decode steps replay per-bucket CUDA graphs (model.decode_graphs); with
prefill_graphs, steps with prefill rows replay per-(tokens, sequences, LoRA) bucket graphs (model.prefill_graphs).
Each call writes the new tokens' K/V at slot_mapping, then attends each new token to its sequence's first
context_lens[s] cached tokens (causally). Inputs may live on the CPU; they are moved to the device here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch

from inlaid_worker.env_switch import env_switch
from inlaid_worker.lora.adapter import LoraAdapter, load_adapter
from inlaid_worker.lora.adapter_cache import AdapterCacheStats
from inlaid_worker.model.adapter_tier import AdapterTier
from inlaid_worker.model.attention import AttentionMetadata
from inlaid_worker.model.backend import resolve_backend
from inlaid_worker.model.config import ModelConfig, load_model_config
from inlaid_worker.model.decode_graphs import BUCKETS, DecodeGraphs
from inlaid_worker.model.graph_logits import GraphLogits, graph_rows
from inlaid_worker.model.llama import LoraDelta, forward
from inlaid_worker.model.llama_fast import MixedLayout, forward_fast, mixed_layout
from inlaid_worker.model.prefill_graphs import PrefillGraphs
from inlaid_worker.model.prefill_layout import S_BUCKETS
from inlaid_worker.model.prompt_logprobs import PromptLogprobs, prompt_logprobs
from inlaid_worker.model.quant_weights import is_gptq_checkpoint, load_gptq_weights
from inlaid_worker.model.rope import cos_sin, inv_frequencies
from inlaid_worker.model.step_input import StepInput, last_int, max_int
from inlaid_worker.model.weights import LlamaWeights, load_weights, with_norm_pairs


def kv_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    element = torch.empty((), dtype=dtype).element_size()
    return config.num_layers * 2 * block_size * config.num_kv_heads * config.head_dim * element


def num_kv_blocks_for_budget(
    config: ModelConfig, block_size: int, dtype: torch.dtype, budget_bytes: int
) -> int:
    """How many KV blocks fit in `budget_bytes` (raises if not even one does)."""
    per_block = kv_bytes_per_block(config, block_size, dtype)
    blocks = budget_bytes // per_block
    if blocks < 1:
        raise ValueError(f"KV budget {budget_bytes} bytes is below one block ({per_block} bytes)")
    return int(blocks)


def fed_ids(step: StepInput, dev: torch.device) -> torch.Tensor:
    """step.token_ids on `dev`, with the rows of its token feed (async scheduling) written in."""
    ids = step.token_ids.to(dev)
    return ids if step.token_feed is None else step.token_feed.fed(ids)


class EagerInputs(NamedTuple):
    """ModelRunner.eager_inputs: what forward_fast reads besides the weights and the KV cache."""

    token_ids: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    slot_mapping: torch.Tensor
    layout: MixedLayout
    lora: LoraDelta | None
    logits_rows: torch.Tensor


class ModelRunner:
    supports_token_feed = True  # StepInput.token_feed is honoured (the engine's async scheduling needs it)

    def __init__(
        self,
        model_dir: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        num_kv_blocks: int = 256,
        block_size: int = 16,
        max_adapters: int = 64,
        backend: str | None = None,
        weights: LlamaWeights | None = None,
        cuda_graphs: bool = True,
        decode_fusion: str | None = None,
        prefill_graphs: bool | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        """`weights`: use these (e.g. random ones for benchmarks) instead of loading model_dir's tensors."""
        if num_kv_blocks <= 0 or block_size <= 0:
            raise ValueError(
                f"num_kv_blocks and block_size must be positive, got {num_kv_blocks}, {block_size}"
            )
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.block_size = block_size
        self.num_kv_blocks = num_kv_blocks
        self.config = load_model_config(self.model_dir)
        self.backend = resolve_backend(backend, self.device)
        if weights is not None:
            self.weights = weights
        elif is_gptq_checkpoint(self.model_dir):
            packed = self.backend == "triton"
            self.weights = load_gptq_weights(self.model_dir, self.config, self.device, dtype, packed)
        else:
            self.weights = load_weights(self.model_dir, self.config, self.device, dtype)
        self._inv_freq = inv_frequencies(self.config.rope, self.config.head_dim, self.device)
        c = self.config
        self.kv_cache = torch.zeros(  # [layers, 2, num_blocks, block_size, kv_heads, head_dim]
            c.num_layers,
            2,
            num_kv_blocks,
            block_size,
            c.num_kv_heads,
            c.head_dim,
            dtype=dtype,
            device=self.device,
        )
        self.kv_bytes_per_block = kv_bytes_per_block(c, block_size, dtype)
        self.max_adapters = max_adapters
        self._adapters = AdapterTier(self.config, self.device, dtype, max_adapters, self.backend)
        self._graphs: DecodeGraphs | None = None
        self._width = min(num_kv_blocks, -(-c.max_position_embeddings // block_size))  # graphs' block-table columns
        # the one float32 logits buffer all the graphs write (model.graph_logits; allocated by the first capture)
        self._graph_logits = GraphLogits(self.device, graph_rows(max_num_seqs, (BUCKETS, S_BUCKETS)))
        if cuda_graphs and self.backend == "triton" and self.device.type == "cuda":
            buckets = tuple(b for b in BUCKETS if b <= self._graph_logits.rows)
            self._graphs = DecodeGraphs(c, self.kv_cache, self._inv_freq, dtype, self._width, self._adapters.pools,
                                        buckets, fusion=decode_fusion, logits=self._graph_logits)  # fmt: skip
        self._prefill: PrefillGraphs | None = None
        self._capture = cuda_graphs and self.device.type == "cuda"  # cuda_graphs=False: the padded steps run eagerly
        if prefill_graphs is None:  # on by default where they are real CUDA graphs
            off = env_switch("INLAID_PREFILL_GRAPHS") is False
            prefill_graphs = self._capture and not off
        self.prefill_graphs = prefill_graphs
        # steps with prefill rows and a token feed (async scheduling's admissions) replay prefill graphs too, the fed
        # ids written into the bucket's device buffer; False runs them eagerly (benchmarks compare)
        self.feed_prefill_graphs = True
        self._prompt_logprobs: PromptLogprobs | None = None

    @property
    def prefill_graphs(self) -> bool:
        """Whether steps with prefill rows run in bucketed CUDA graphs (model.prefill_graphs; triton only)."""
        return self._prefill is not None

    @prefill_graphs.setter
    def prefill_graphs(self, on: bool) -> None:
        if not on or self.backend != "triton":
            self._prefill = None
        elif self._prefill is None:
            self._prefill = PrefillGraphs(self.config, self.kv_cache, self._inv_freq, self.dtype, self._width,
                                          self._adapters.pools, capture=self._capture,
                                          logits=self._graph_logits)  # fmt: skip

    @property
    def weights(self) -> LlamaWeights:
        """The served weights. Setting them (load, or onboard's replaced layers) makes each layer's pair-ordered norm
        weights where it has none or stale ones (weights.with_norm_pairs: a norm replaced by another tensor or written
        in place since; the triton backend's "+dn2" decode fusion reads them); the object kept is what the decode
        graphs compare to drop their captures (set the weights again after writing a norm in place)."""
        return self._weights

    @weights.setter
    def weights(self, value: LlamaWeights) -> None:
        self._weights = with_norm_pairs(value) if self.backend == "triton" else value

    @property
    def decode_fusion(self) -> str | None:
        """The graphed decode steps' fusion setting ("auto" or one of llama_fast.DECODE_FUSIONS); None when decode
        steps run eagerly."""
        return None if self._graphs is None else self._graphs.fusion

    @decode_fusion.setter
    def decode_fusion(self, value: str) -> None:
        if self._graphs is not None:
            self._graphs.fusion = value

    @property
    def decode_pdl(self) -> int:
        """The decode graphs' PDL mode (kernels.pdl.MODES; 0 = off, also when decode steps run eagerly)."""
        return 0 if self._graphs is None else self._graphs.pdl

    @decode_pdl.setter
    def decode_pdl(self, value: int) -> None:
        if self._graphs is not None:
            self._graphs.pdl = value

    @property
    def adapter_slots(self) -> dict[str, int]:
        return self._adapters.slots

    def add_adapter(self, name: str, adapter: LoraAdapter | str | Path) -> int:
        if not isinstance(adapter, LoraAdapter):
            adapter = load_adapter(adapter, self.config)
        return self._adapters.add(name, adapter)

    def remove_adapter(self, name: str) -> None:
        self._adapters.remove(name)

    def prepare_adapters(self, names: Iterable[str], keep: Iterable[str] = ()) -> dict[str, int]:
        return self._adapters.acquire(names, keep)

    def adapter_stats(self) -> AdapterCacheStats:
        return self._adapters.stats()

    @torch.inference_mode()
    def execute(self, step: StepInput) -> torch.Tensor:
        """Run one step; returns logits [len(logits_indices), vocab] float32 on the CPU."""
        return self._execute(step, host=True)

    @torch.inference_mode()
    def execute_device(self, step: StepInput) -> torch.Tensor:
        """execute's logits left on the runner's device (the engine samples there: engine.device_sampler). A
        graph-replayed step returns a view of the graphs' one shared buffer (model.graph_logits), valid until the next
        step (read it, or queue the reads on the current stream, before then); never write it."""
        return self._execute(step, host=False)

    def take_prompt_logprobs(self) -> PromptLogprobs | None:
        """The prompt logprobs of the last step's StepInput.prompt_rows (None when it had none); once."""
        out, self._prompt_logprobs = self._prompt_logprobs, None
        return out

    def _score_prompt(self, hidden: torch.Tensor, step: StepInput) -> None:
        if step.prompt_rows is None or step.prompt_targets is None:
            return
        dev = self.device
        self._prompt_logprobs = prompt_logprobs(hidden, self.weights.lm_head, step.prompt_rows.to(dev),
                                                step.prompt_targets.to(dev), step.prompt_top_k)  # fmt: skip

    def _execute(self, step: StepInput, host: bool) -> torch.Tensor:
        self._check(step)
        self._prompt_logprobs = None
        if self.backend == "triton":
            return self._execute_fast(step, host)
        dev = self.device
        token_ids = fed_ids(step, dev)
        meta = AttentionMetadata.build(
            step.slot_mapping.to(dev),
            step.query_start_loc.tolist(),
            step.context_lens.tolist(),
            step.block_tables.to(dev),
            self.block_size,
        )
        lora = self._adapters.context(step.adapter_ids)
        rope = cos_sin(self._inv_freq, step.positions.to(dev), self.dtype)
        hidden = forward(self.weights, self.config, token_ids, rope, self.kv_cache, meta, lora)
        self._score_prompt(hidden, step)
        picked = hidden[step.logits_indices.to(dev)]  # [S, hidden]
        logits = torch.nn.functional.linear(picked, self.weights.lm_head).float()
        return logits.cpu() if host else logits

    def _execute_fast(self, step: StepInput, host: bool) -> torch.Tensor:
        if step.prompt_rows is not None:  # graphs carry the logits rows only: such steps run eagerly
            x = self.eager_inputs(step)
            hidden = self.eager_hidden(x)
            self._score_prompt(hidden, step)
            logits = torch.nn.functional.linear(hidden[x.logits_rows], self.weights.lm_head).float()
            return logits.cpu() if host else logits
        if self._graphs is not None and self._graphs.can_run(step):
            ids = step.adapter_ids.tolist()  # one host list: the slots' check and the graphs' LoRA test read it
            self._adapters.check_slots(ids)
            return self._graphs.run(self.weights, step, host, ids)
        fed_ok = step.token_feed is None or self.feed_prefill_graphs
        if self._prefill is not None and fed_ok and self._prefill.can_run(step):
            self._adapters.check_slots(step.adapter_ids)
            return self._prefill.run(self.weights, step, host)
        logits = self.eager_logits(self.eager_inputs(step))
        return logits.cpu() if host else logits

    def eager_inputs(self, step: StepInput) -> EagerInputs:
        """The device-side metadata of an eager fast-path step (its small host-to-device copies included)."""
        dev = self.device
        lora = self._adapters.context(step.adapter_ids)
        tables = step.block_tables.to(dev)
        layout = mixed_layout(step.query_start_loc.tolist(), step.context_lens.tolist(), tables, self.block_size)
        cos, sin = cos_sin(self._inv_freq, step.positions.to(dev), self.dtype)
        return EagerInputs(fed_ids(step, dev), cos[:, 0], sin[:, 0], step.slot_mapping.to(dev), layout, lora,
                           step.logits_indices.to(dev))  # fmt: skip

    def eager_hidden(self, x: EagerInputs) -> torch.Tensor:
        """The forward's launches of an eager fast-path step: the final hidden states of every token row."""
        return forward_fast(self.weights, self.config, x.token_ids, x.cos, x.sin, x.slot_mapping, self.kv_cache,
                            x.layout, x.lora)  # fmt: skip

    def eager_logits(self, x: EagerInputs) -> torch.Tensor:
        """The forward's launches of an eager fast-path step: fp32 logits of its logits rows, on the device."""
        return torch.nn.functional.linear(self.eager_hidden(x)[x.logits_rows], self.weights.lm_head).float()

    @property
    def graph_logits_rows(self) -> int:
        """Rows of the float32 logits buffer that every graph writes (model.graph_logits; engine.graph_reserve)."""
        return self._graph_logits.rows

    @property
    def graph_captures(self) -> int:
        """CUDA graphs captured so far (0 when graphs are off)."""
        return 0 if self._graphs is None else self._graphs.captures

    @property
    def prefill_graph_stats(self) -> dict[str, float]:
        """Prefill graphs: captures, padded steps run, host microseconds of the last replayed step (up to the
        replay call's return); zeros when they are off."""
        p = self._prefill
        return {"captures": p.captures if p else 0, "runs": p.runs if p else 0,
                "last_host_us": p.last_host_s * 1e6 if p else 0.0}  # fmt: skip

    def _check(self, step: StepInput) -> None:
        t = step.num_tokens
        for name in ("positions", "adapter_ids", "slot_mapping"):
            if getattr(step, name).shape != (t,):
                raise ValueError(
                    f"StepInput.{name} must have shape [{t}], got {tuple(getattr(step, name).shape)}"
                )
        s = step.num_seqs
        if step.query_start_loc.shape != (s + 1,) or step.block_tables.shape[0] != s:
            raise ValueError(f"StepInput: query_start_loc must be [{s + 1}] and block_tables [{s}, *]")
        if s and last_int(step.query_start_loc) != t:
            raise ValueError(f"StepInput.query_start_loc ends at {last_int(step.query_start_loc)}, not {t}")
        if t and max_int(step.slot_mapping) >= self.num_kv_blocks * self.block_size:
            raise ValueError("StepInput.slot_mapping points past the KV cache")
