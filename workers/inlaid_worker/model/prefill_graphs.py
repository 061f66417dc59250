"""CUDA graphs for prefill and mixed steps (triton backend on CUDA): one per (TB, SB, LoRA on/off) bucket.

A step with prefill rows (pure prefill chunks, or decode rows plus chunks) of T rows over S sequences runs in
the bucket of model.prefill_layout: its whole forward reads one static int32 device buffer (token ids,
positions, KV slots, logits rows, attention tiles, LoRA row blocks, the block table), so the step's CPU cost is
a numpy fill of a pinned buffer, one asynchronous copy and one replay (and, for execute's host logits, the copy back
into rows [:SB] of the runner's one pinned host buffer, made by the first such step). The logits go into rows [:SB] of
the runner's one float32 device buffer, shared with the decode graphs (model.graph_logits; the graph-less twin
writes it too): valid until the next step of any graph, decode or prefill. The pinned staging buffer is filled again
only after the event recorded behind its last copy (decode_graphs.Staging): a step nothing syncs with (a non-final
prompt chunk samples nothing) must not let the bucket's next step overwrite it before the GPU has read it. Attention
goes through kernels.paged_prefill over the bucket's tile table and LoRA through SGMV blocks of
prefill_layout.LORA_BLOCK_M rows over a bucket-sized block list, so every grid is the bucket's, whatever the
step's chunk layout; padding rows write no KV (slot -1), belong to no tile or block, and are never read back.

Policy (can_run): a step runs eagerly when its padded token bucket TB exceeds `max_tokens` (env
INLAID_PREFILL_GRAPH_MAX_TOKENS, default MAX_TOKENS = 1024: on the H200, 7B int4, a lone 2048-token chunk replayed
at 0.90x / 1.05x (base / 8 LoRA) of the eager step, whose flash attention beats kernels.paged_prefill's tiles
there, while steps up to 512 tokens gained 1.6-15.6x; bench/results/prefill-graphs-2026-11-30.md). Graphs are
captured lazily (first use of a bucket, after one eager warm-up run that also tunes quant_matmul for the bucket's
row count) and at most `max_graphs` of them live. Once they are all taken, a new bucket runs eagerly until it has
been asked for at least twice and more often than the least used live bucket (by a count halved every DECAY_EVERY
eligible steps, times ADMIT_MARGIN); only then is it captured in that bucket's place (ties: least recently run).
So a one-off step shape never costs a capture, and more hot shapes than max_graphs do not make the set churn (a
capture costs 0.05-1.2 s against an eager step of 25-100 ms): with LRU alone, 16 shapes used in turn re-captured on
21% of the steps (stubbed forward, 600 steps); with the counts the set settles after the first 12 captures.
Invalidation as model.decode_graphs: a new weights object drops every graph, a LoRA pool layout change (pools
version) drops the LoRA ones; in-place layer swaps keep addresses; `keep` holds what only a graph reads.

Without CUDA (capture=False) the same padded static-buffer step runs eagerly: the graph-less twin the CPU tests
compare with the runner's eager step under Triton's interpreter. Its host logits (run(host=True)) are a fresh copy
of the shared rows, on the CPU too, as an eager step's are: a later step does not overwrite them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from inlaid_worker.env_switch import env_int
from inlaid_worker.kernels.lora_batch import LoraBatch
from inlaid_worker.kernels.side_stream import side_stream
from inlaid_worker.lora.pools import LoraPools
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.decode_graphs import Staging, _workspaces, is_pure_decode, sync_stream
from inlaid_worker.model.graph_logits import GraphLogits, write_logits
from inlaid_worker.model.kernel_lora import KernelLoraContext
from inlaid_worker.model.llama_fast import TiledLayout, forward_fast
from inlaid_worker.model.prefill_layout import LORA_BLOCK_M, S_BUCKETS, PrefillDims, fits, prefill_bucket, stage_prefill
from inlaid_worker.model.rope import cos_sin
from inlaid_worker.model.step_input import StepInput
from inlaid_worker.model.weights import LlamaWeights

MAX_GRAPHS = 12  # live captured buckets; each holds its staging buffers (logits: the shared GraphLogits; activations:
# a shared pool)
MAX_TOKENS = 1024  # the largest padded token bucket that runs in a graph (env INLAID_PREFILL_GRAPH_MAX_TOKENS)
USES = 64  # request counts kept for buckets that are not live (the least used are forgotten first)
DECAY_EVERY = 256  # eligible steps between halvings of every bucket's request count
ADMIT_MARGIN = 1.25  # a new bucket replaces a live one only when asked for more than this times as often


def env_max_tokens() -> int:
    """INLAID_PREFILL_GRAPH_MAX_TOKENS (default MAX_TOKENS; 0 runs every prefill step eagerly)."""
    return env_int("INLAID_PREFILL_GRAPH_MAX_TOKENS", MAX_TOKENS, "tokens")


Key = tuple[int, int, bool]  # TB, SB, LoRA on


@dataclass
class _Bucket:
    dims: PrefillDims
    staging: Staging  # int32 staging buffer (pinned on CUDA) and what the forward reads (the host one without capture)
    body: Callable[[], torch.Tensor]  # the padded step's forward -> logits [SB, vocab] fp32 (rows of GraphLogits)
    keep: tuple[object, ...]  # what the graph reads or writes that nothing else holds
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None  # the captured output: rows [:SB] of the shared GraphLogits buffer
    host_logits: torch.Tensor | None = None  # pinned: what run(host=True) returns a view of (rows [:SB] of the
    # shared host buffer, taken by the bucket's first such step)


class PrefillGraphs:
    def __init__(
        self, config: ModelConfig, kv_cache: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype,
        max_blocks: int, pools: LoraPools | None, capture: bool = True, max_graphs: int = MAX_GRAPHS,
        max_tokens: int | None = None, logits: GraphLogits | None = None,
    ) -> None:  # fmt: skip
        """logits: the runner's buffer shared with its decode graphs (None: one of the largest SB's rows); steps of
        a larger SB than its rows run eagerly."""
        self._c, self._kv, self._inv_freq, self._dtype = config, kv_cache, inv_freq, dtype
        self._w, self._pools, self._capture, self.max_graphs = max_blocks, pools, capture, max_graphs
        self.max_tokens = env_max_tokens() if max_tokens is None else max_tokens
        self._device = kv_cache.device
        self._logits = GraphLogits(self._device, S_BUCKETS[-1]) if logits is None else logits
        self._buckets: OrderedDict[Key, _Bucket] = OrderedDict()  # least recently run first
        self._uses: dict[Key, float] = {}  # decayed request counts of eligible steps' buckets (can_run)
        self._eligible = 0  # eligible steps since the last halving
        self._mempool = torch.cuda.graph_pool_handle() if capture else None
        self._weights: LlamaWeights | None = None
        self._pools_version = -1
        self.captures = 0
        self.evictions = 0  # live buckets dropped to make room for another
        self.runs = 0  # padded steps run (replays with capture, eager twin runs without)
        self.last_host_s = 0.0  # host time of the last replayed step up to the replay call's return (benchmarks)

    def _key(self, step: StepInput) -> Key | None:
        b = prefill_bucket(step.num_tokens, step.num_seqs)
        if b is None:
            return None
        with_lora = self._pools is not None and bool((step.adapter_ids >= 0).any())
        return (b[0], b[1], with_lora)

    def can_run(self, step: StepInput) -> bool:
        """A step with prefill rows whose bucket is at most max_tokens rows and SB the logits buffer's rows, that fits
        it, and whose bucket is live, has room, or is asked for often enough to replace the least used live one (run()
        then evicts that one; see the module docstring). Counts the request (the one side effect: the runner asks once
        per step)."""
        if step.num_seqs == 0 or is_pure_decode(step):
            return False
        key = self._key(step)
        if key is None or key[0] > self.max_tokens or key[1] > self._logits.rows:
            return False
        if not fits(PrefillDims(key[0], key[1], self._w), step):
            return False
        uses = self._count(key)
        if key in self._buckets or len(self._buckets) < self.max_graphs:
            return True
        if self.max_graphs <= 0 or uses < 2:
            return False
        return uses > ADMIT_MARGIN * self._uses_or_zero(self._victim())

    def _count(self, key: Key) -> float:
        """One more request of `key`; every DECAY_EVERY of them all counts halve; the counts of at most USES
        buckets that are not live are kept (the least used go first)."""
        self._eligible += 1
        if self._eligible >= DECAY_EVERY:
            self._eligible = 0
            self._uses = {k: v / 2 for k, v in self._uses.items()}
        self._uses[key] = self._uses.get(key, 0.0) + 1.0
        if len(self._uses) > USES:  # at most USES idle ones; the list is built only when there may be more
            idle = [k for k in self._uses if k not in self._buckets and k != key]  # never the key being counted
            excess = len(idle) + (key not in self._buckets) - USES
            for k in sorted(idle, key=self._uses.__getitem__)[: max(excess, 0)]:
                del self._uses[k]
        return self._uses[key]

    def _victim(self) -> Key:
        """The live bucket a new one would replace: the least used, the least recently run among equals."""
        return min(self._buckets, key=self._uses_or_zero)  # min keeps the first (least recently run) of equals

    def _uses_or_zero(self, key: Key) -> float:
        return self._uses.get(key, 0.0)

    def run(self, weights: LlamaWeights, step: StepInput, host: bool = True) -> torch.Tensor:
        """Logits [S, vocab] float32 on the CPU of a step that can_run: a view of the shared pinned host buffer, valid
        until the next host step of any graph (the graph-less twin: a fresh CPU tensor, a copy even on the CPU, where
        .cpu() would return the shared rows themselves). host=False: on the device, no copy: a view of the shared
        device buffer, valid until the next step of any graph, decode or prefill (read it, or queue the reads on the
        current stream, before then)."""
        t0 = time.perf_counter()
        self._drop_stale(weights)
        key = self._key(step)  # the caller checked can_run (a step that does not fit fails in stage_prefill)
        if key is None or is_pure_decode(step):
            raise ValueError("PrefillGraphs.run: not a step with prefill rows of a prefill bucket")
        b = self._buckets.get(key)
        if b is None:
            self._make_room()
            b = self._new(weights, key)
        else:
            self._buckets.move_to_end(key)
        b.staging.send(lambda buf: stage_prefill(buf.numpy(), b.dims, step))  # waits for the bucket's last copy
        if step.token_feed is not None:  # async scheduling: fed ids still on the device, after the staged copy
            at = b.dims.offsets()["tokens"][0]
            step.token_feed.write(b.staging.dev[at : at + step.num_tokens])
        s = step.num_seqs
        self.runs += 1
        if not self._capture:
            self._buckets[key] = b
            logits = b.body()[:s]
            return logits.to("cpu", copy=True) if host else logits  # copy=True: a no-op .cpu() would alias the buffer
        if b.graph is None:
            self._record(b)
            self._buckets[key] = b
        assert b.graph is not None and b.logits is not None
        b.graph.replay()
        self.last_host_s = time.perf_counter() - t0
        if not host:
            return b.logits[:s]
        if b.host_logits is None:
            b.host_logits = self._logits.host(b.logits)
        out = b.host_logits[:s]
        out.copy_(b.logits[:s], non_blocking=True)
        sync_stream(self._device)
        return out

    def _make_room(self) -> None:
        """Drop the least used buckets (least recently run among equals) until one more fits (their memory
        returns to the shared pool, which the live graphs keep alive; a pool whose graphs all died is replaced, as
        in _drop_stale)."""
        evicted = False
        while self._buckets and len(self._buckets) >= max(self.max_graphs, 1):
            del self._buckets[self._victim()]
            self.evictions += 1
            evicted = True
        if evicted and not self._buckets and self._capture:
            self._mempool = torch.cuda.graph_pool_handle()

    def _drop_stale(self, weights: LlamaWeights) -> None:
        version = self._pools.version if self._pools is not None else 0
        if weights is self._weights and version == self._pools_version:
            return
        stale = [k for k in self._buckets if weights is not self._weights or k[2]]
        for key in stale:
            del self._buckets[key]
        if stale and self._capture:  # a pool whose graphs all died may not be captured into again
            self._mempool = torch.cuda.graph_pool_handle()
        self._weights, self._pools_version = weights, version

    def _new(self, weights: LlamaWeights, key: Key) -> _Bucket:
        dims = PrefillDims(key[0], key[1], self._w)
        host = torch.zeros(dims.size, dtype=torch.int32, pin_memory=self._capture and self._device.type == "cuda")
        dev = torch.zeros(dims.size, dtype=torch.int32, device=self._device) if self._capture else host
        body, keep = self._body(weights, dims, dev, key[2])
        return _Bucket(dims, Staging(host, dev), body, keep)

    def _body(self, weights: LlamaWeights, dims: PrefillDims, buf: torch.Tensor, with_lora: bool
              ) -> tuple[Callable[[], torch.Tensor], tuple[object, ...]]:  # fmt: skip
        off = dims.offsets()

        def part(name: str) -> torch.Tensor:
            start, n = off[name]
            return buf[start : start + n]

        tb = dims.tokens
        tok = part("tokens").view(3, tb)
        rows = part("logits")
        layout = TiledLayout(part("tables").view(dims.seqs, dims.width), part("tiles").view(4, dims.tiles))
        lora = None
        if with_lora and self._pools is not None:
            lp = part("lora")
            blk = lp[tb:].view(3, dims.blocks)
            batch = LoraBatch(lp[:tb], blk[0], blk[1], blk[2], LORA_BLOCK_M, tb, self._pools.r_max)
            lora = KernelLoraContext(batch, self._pools)
        c, kv, inv_freq, dtype = self._c, self._kv, self._inv_freq, self._dtype
        out = self._logits.out(dims.seqs, weights.lm_head.shape[0])  # made here by the first graph: not in a capture

        def body() -> torch.Tensor:
            cos, sin = cos_sin(inv_freq, tok[1], dtype)
            hidden = forward_fast(weights, c, tok[0], cos[:, 0], sin[:, 0], tok[2], kv, layout, lora)
            return write_logits(out, hidden.index_select(0, rows), weights.lm_head)

        return body, (layout, lora, out)

    def _record(self, b: _Bucket) -> None:
        side = side_stream(self._device)  # one per device: a new stream would keep a cuBLAS workspace each
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):  # warm-up: compiles kernels, tunes quant_matmul, sizes its workspaces
            b.body()
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._mempool):
            logits = b.body()
        self.captures += 1
        b.graph, b.logits = graph, logits
        b.keep = b.keep + _workspaces()
