"""Per-request stream comparison for async scheduling tests (engine/async_step.py).

Async scheduling with admissions launched ahead runs other batches than the synchronous engine (a request is admitted
one step later, next to other rows), and CPU fp32 GEMMs are not batch-invariant: a row's logits move by ~1e-6 with
the batch's row count (oneDNN/MKL pick other blockings). Sampled tokens, texts, finish reasons and counts must still be
equal; logprob values are compared to LOGPROB_TOL, their token ids and ranks exactly."""

from __future__ import annotations

import math
from typing import Any

from inlaid_worker.engine.engine import RequestOutput
from inlaid_worker.engine.sampler import TokenLogprobs

LOGPROB_TOL = 1e-4


def _lp_equal(a: TokenLogprobs, b: TokenLogprobs) -> bool:
    close = math.isclose(a.logprob, b.logprob, rel_tol=LOGPROB_TOL, abs_tol=LOGPROB_TOL)
    tops = len(a.top) == len(b.top) and all(
        x[0] == y[0] and math.isclose(x[1], y[1], rel_tol=LOGPROB_TOL, abs_tol=LOGPROB_TOL)
        for x, y in zip(a.top, b.top, strict=True)
    )
    return a.token_id == b.token_id and a.rank == b.rank and close and tops


def _lps_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(_lp_equal(x, y) for x, y in zip(a, b, strict=True))


def assert_same_stream(got: list[RequestOutput], want: list[RequestOutput], rid: str) -> None:
    """Every field equal, logprobs and prompt logprobs to LOGPROB_TOL."""
    assert len(got) == len(want), (rid, len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        exact = {k: v for k, v in vars(g).items() if k not in ("logprobs", "prompt_logprobs")}
        assert exact == {k: v for k, v in vars(w).items() if k not in ("logprobs", "prompt_logprobs")}, (rid, i)
        assert _lps_equal(g.logprobs, w.logprobs), (rid, i, g.logprobs, w.logprobs)
        assert _lps_equal(g.prompt_logprobs, w.prompt_logprobs), (rid, i)
