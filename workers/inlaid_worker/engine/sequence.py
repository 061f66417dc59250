"""The state of one request: its tokens, adapter, sampling parameters, KV blocks and progress.

Invariant: the KV cache holds the first `num_computed_tokens` of `token_ids`; the next step computes the
tokens `token_ids[num_computed_tokens:]` (a prompt chunk, the whole prompt plus outputs after a preemption,
or one token at decode). A preempted sequence keeps its tokens and recomputes its KV from scratch.
"""

from __future__ import annotations

import enum
import itertools
from typing import TYPE_CHECKING, Any

from inlaid_worker.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from inlaid_worker.engine.detokenizer import IncrementalDetokenizer


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"
    ERROR = "error"


_arrival = itertools.count()


class Sequence:
    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingParams,
        adapter: str | None = None,
        adapter_slot: int = -1,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError("a prompt needs at least one token")
        self.request_id = request_id
        self.arrival = next(_arrival)
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.sampling = sampling
        self.adapter = adapter  # None = the base model
        self.adapter_slot = adapter_slot  # -1 = the base model
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.num_preemptions = 0
        self.generator: Any = None  # torch.Generator when sampling with a seed
        self.detokenizer: IncrementalDetokenizer | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def token_slice(self, start: int, end: int) -> list[int]:
        n_prompt = len(self.prompt_token_ids)
        if end <= n_prompt:
            return self.prompt_token_ids[start:end]
        return self.token_ids[start:end]

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
