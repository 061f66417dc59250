"""bench/engine/prefill_graph_rows.py: the step layouts it times (mixed step first, chunk sizes, adapters)."""

from __future__ import annotations

import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "bench" / "engine"


def test_cases_put_the_mixed_step_first_then_lone_chunks_base_then_lora() -> None:
    sys.path.insert(0, str(ENGINE))
    from prefill_graph_rows import cases

    steps = cases([128, 512], 4, 64, [3, 5], 1000, 4000)
    assert [name for name, _ in steps] == ["mixed-4x1+128-base", "prefill-128-base", "prefill-512-base",
                                           "mixed-4x1+128-2lora", "prefill-128-2lora", "prefill-512-2lora"]  # fmt: skip
    mixed, lone = steps[3][1], steps[5][1]
    assert (mixed.num_tokens, mixed.num_seqs, lone.num_tokens, lone.num_seqs) == (132, 5, 512, 1)
    assert mixed.adapter_ids.tolist() == [3, 5, 3, 5] + [5] * 128 and mixed.context_lens.tolist() == [64] * 4 + [128]
    assert set(steps[0][1].adapter_ids.tolist()) == {-1} and set(lone.adapter_ids.tolist()) == {3}
