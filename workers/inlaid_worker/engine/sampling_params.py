"""Per-request sampling parameters, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from inlaid_worker.engine.error_kind import ErrorKind

if TYPE_CHECKING:
    from inlaid_worker.engine.structured import StructuredOutput

MAX_LOGPROBS = 20  # top alternatives per token, as vLLM's default max_logprobs
MAX_REPETITION_PENALTY = 100.0  # vLLM has no upper bound; this keeps the value sane and finite
MAX_LOGIT_BIAS_ENTRIES = 300  # OpenAI's limit
MAX_LOGIT_BIAS = 100.0  # |bias| <= 100, as OpenAI: -100 effectively bans a token, +100 effectively forces it


class SamplingError(ValueError):
    """A sampling parameter is out of range; the message names the parameter and its range."""

    kind = ErrorKind.BAD_INPUT


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # <= 0 = disabled
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0  # [-2, 2]; 0 = off
    frequency_penalty: float = 0.0  # [-2, 2]; 0 = off
    repetition_penalty: float = 1.0  # (0, MAX_REPETITION_PENALTY]; 1 = off
    logprobs: int | None = None  # None = off; N = the sampled token's logprob plus the top N alternatives
    structured: StructuredOutput | None = None  # None = free text; else a grammar constrains the output
    # (token id, bias) pairs, ids ascending and unique: added to the logits before everything else (OpenAI)
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_p: float = 0.0  # [0, 1]; 0 = off: drop tokens less likely than min_p x the most likely one (vLLM)
    min_tokens: int = 0  # EOS and stop token ids are masked, and stop strings ignored, until this many outputs
    # vLLM's prompt_logprobs: None = off; N = each prompt token's logprob and rank plus the top N (model.prompt_logprobs)
    prompt_logprobs: int | None = None
    # the text keeps the tool format's markers that are special tokens (tool_template.TOOL_MARKERS), other special
    # tokens dropped; False: every special token dropped
    keep_tool_markers: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise SamplingError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 100.0 or self.temperature != self.temperature:
            raise SamplingError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise SamplingError(f"seed must be in [0, 2^64), got {self.seed}")
        if any(not s for s in self.stop):
            raise SamplingError("stop strings must not be empty")
        if len(self.stop) > 16:
            raise SamplingError(f"at most 16 stop strings, got {len(self.stop)}")
        if any(t < 0 for t in self.stop_token_ids):
            raise SamplingError("stop_token_ids must be non-negative")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if not -2.0 <= v <= 2.0:  # NaN fails too
                raise SamplingError(f"{name} must be in [-2, 2], got {v}")
        if not 0.0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise SamplingError(
                f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY:g}], got {self.repetition_penalty}"
            )
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise SamplingError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")
        if self.prompt_logprobs is not None and not 0 <= self.prompt_logprobs <= MAX_LOGPROBS:
            raise SamplingError(f"prompt_logprobs must be in [0, {MAX_LOGPROBS}], got {self.prompt_logprobs}")
        if not 0.0 <= self.min_p <= 1.0:  # NaN fails too
            raise SamplingError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.min_tokens < 0:
            raise SamplingError(f"min_tokens must be non-negative, got {self.min_tokens}")
        self._check_logit_bias()

    def _check_logit_bias(self) -> None:
        bias = self.logit_bias
        if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise SamplingError(f"logit_bias: at most {MAX_LOGIT_BIAS_ENTRIES} entries, got {len(bias)}")
        ids = [t for t, _ in bias]
        if any(t < 0 for t in ids):
            raise SamplingError("logit_bias: token ids must be non-negative")
        if ids != sorted(set(ids)):
            raise SamplingError("logit_bias: token ids must be unique and ascending")
        bad = [b for _, b in bias if not -MAX_LOGIT_BIAS <= b <= MAX_LOGIT_BIAS]  # NaN too
        if bad:
            raise SamplingError(
                f"logit_bias: biases must be in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}], got {bad[0]}"
            )

    def check_vocab(self, vocab_size: int) -> None:
        """Raises SamplingError when a logit_bias token id is outside the model's vocabulary."""
        bad = [t for t, _ in self.logit_bias if t >= vocab_size]
        if bad:
            raise SamplingError(f"logit_bias: token id {bad[0]} is outside the vocabulary (size {vocab_size})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0
