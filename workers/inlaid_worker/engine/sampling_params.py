"""Per-request sampling parameters, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass


class SamplingError(ValueError):
    """A sampling parameter is out of range; the message names the parameter and its range."""


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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
