"""What one served engine step was, in the simulator's cost-model terms (bench/sim/cost_fit.py's cost points), and
the one-off work it carried (kernel compiles, CUDA graph captures) that a cost fit must leave out.

A chunk is a decode row when it computes one token past the prompt (the sequence has output and the chunk is its
last token); every other chunk is prefill (a prompt chunk, or the recompute of a preempted sequence). kv_tokens is
what the simulator counts (libs/sim/src/simulator.ts): each row's context after the step (prompt + tokens generated
before it for a decode row, the chunk's end for a prefill chunk). Pure: no torch, no engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ChunkLike(Protocol):
    seq: Any  # engine.sequence.Sequence: adapter, num_prompt_tokens, num_tokens, output_token_ids
    start: int
    num_tokens: int
    samples: bool


def is_decode(chunk: ChunkLike) -> bool:
    seq = chunk.seq
    return chunk.num_tokens == 1 and bool(seq.output_token_ids) and chunk.start == seq.num_tokens - 1


def step_shape(chunks: Iterable[ChunkLike], rank: int) -> dict[str, int]:
    """{prefill_tokens, decode_seqs, distinct_adapters, rank, kv_tokens, rows} of one scheduled step (before it runs)."""
    prefill = decode = kv = rows = 0
    adapters: set[str] = set()
    for c in chunks:
        rows += 1
        kv += c.start + c.num_tokens
        if is_decode(c):
            decode += 1
        else:
            prefill += c.num_tokens
        if c.seq.adapter is not None:
            adapters.add(c.seq.adapter)
    return dict(prefill_tokens=prefill, decode_seqs=decode, distinct_adapters=len(adapters),
                rank=rank if adapters else 0, kv_tokens=kv, rows=rows)  # fmt: skip


@dataclass(frozen=True)
class Counters:
    """Cumulative counters read between steps; the difference over a step says what one-off work it did."""

    compiles: int  # kernel binaries in the Triton cache folder (a new entry = a compile during the step)
    decode_captures: int
    prefill_captures: int
    prefill_runs: int  # padded prefill/mixed steps (graph replays, or their eager twin without CUDA)
    adapter_loads: int  # adapter cache misses (host -> device loads)
    tunes: int = 0  # autotuned keys (Triton autotune caches, quant_matmul's tuned shapes): a new one = a tuning run

    def since(self, before: Counters) -> dict[str, int]:
        return {k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__}


def one_off(delta: Mapping[str, int]) -> bool:
    """A step that compiled a kernel, tuned one or captured a graph: a start-up cost, not a step cost."""
    return (delta["compiles"] > 0 or delta["decode_captures"] > 0 or delta["prefill_captures"] > 0
            or delta.get("tunes", 0) > 0)  # fmt: skip


def step_path(shape: Mapping[str, int], delta: Mapping[str, int]) -> str:
    """'decode' (a pure decode step: CUDA graph replay on the GPU), 'prefill-padded' (a prefill/mixed step in the
    runner's padded prefill path: a graph replay on the GPU) or 'prefill-eager'."""
    if shape["prefill_tokens"] == 0:
        return "decode"
    return "prefill-padded" if delta["prefill_runs"] > 0 else "prefill-eager"
