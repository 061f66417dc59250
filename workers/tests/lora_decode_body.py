"""A tiny runner with two adapters, three prefilled rows and their decode step, and that step through the bucket-4
decode-graph body run uncaptured (or eagerly): the shared setup of the LoRA checks that run under Triton's interpreter
in a subprocess (test_lora_early.py, test_lora_auto.py; factories.interpreted_json). A script puts this directory and
kernels/ on sys.path, calls setup(), then builds LoraBody.make(...)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

BS = 4  # KV block size; the decode graph's bucket is 4 too (3 rows and a padding row)


def setup() -> None:
    """The subprocess's patches: the interpreter's (kernels/cases.py), one thread, and the CUDA graph API stubbed (the
    bodies run uncaptured)."""
    from cases import _patch_interpreter_for_numpy

    _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    torch.cuda.graph_pool_handle = lambda: None  # type: ignore[assignment]
    torch.cuda.CUDAGraph = object  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class LoraBody:
    runner: Any  # ModelRunner (backend "triton")
    graphs: Any  # DecodeGraphs of bucket 4, fusion "none", no PDL
    snap: torch.Tensor  # the KV cache after the prefill: restored before every decode run
    tails: list[tuple[list[int], list[int]]]  # per row: its decode token, its block table
    ids: list[int]  # each row's adapter slot

    @staticmethod
    def make(model: str, adapters: Sequence[tuple[int, Sequence[str]]], ids: Sequence[int]) -> LoraBody:
        """adapters: (rank, target modules) per slot; ids: the 3 rows' slots (-1 = base)."""
        from factories import make_lora_adapter, make_step
        from inlaid_worker.model.decode_graphs import DecodeGraphs
        from inlaid_worker.model.runner import ModelRunner

        r = ModelRunner(model, num_kv_blocks=24, block_size=BS, max_adapters=2, backend="triton")
        for i, (rank, targets) in enumerate(adapters):
            r.add_adapter(f"a{i}", make_lora_adapter(r.config, rank=rank, targets=targets, seed=i + 1))
        gen = torch.Generator().manual_seed(0)
        seqs = [torch.randint(3, 300, (9,), generator=gen).tolist() for _ in range(3)]
        tables = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(3)]
        r.execute(make_step([(s[:8], 0, tables[i], ids[i]) for i, s in enumerate(seqs)], BS))
        dg = DecodeGraphs(r.config, r.kv_cache, r._inv_freq, r.dtype, r._width, r._adapters.pools, buckets=(4,),
                          fusion="none", pdl_mode=0)  # fmt: skip
        return LoraBody(r, dg, r.kv_cache.clone(), [(s[8:], tables[i]) for i, s in enumerate(seqs)], list(ids))

    def step(self, ids: Sequence[int] | None = None) -> Any:
        """The decode step (of the rows' own slots, or `ids`)."""
        from factories import make_step

        slots = self.ids if ids is None else ids
        return make_step([(tok, 8, table, a) for (tok, table), a in zip(self.tails, slots, strict=True)], BS)

    def eager(self, ids: Sequence[int] | None = None) -> torch.Tensor:
        """The decode step's logits through ModelRunner.execute (from the prefill's KV state)."""
        self.runner.kv_cache.copy_(self.snap)
        return self.runner.execute(self.step(ids)).clone()

    def body(self, grouped: bool = False) -> torch.Tensor:
        """The decode step's logits (its 3 rows) through the bucket-4 graph body, uncaptured (from the prefill's KV
        state); grouped: the body of the grouped-LoRA graph."""
        from inlaid_worker.model.decode_graphs import stage_step

        r = self.runner
        r.kv_cache.copy_(self.snap)
        g = self.graphs._new(4, 0, grouped)
        stage_step(g.staging.host, 4, r._width, self.step())
        g.staging.dev.copy_(g.staging.host)
        body, _ = self.graphs._body(r.weights, g, 4, True, "none", 0)
        return body()[:3].clone()
