"""bench/engine/prefill_graph_rows.py: the step layouts it times (mixed step first, chunk sizes, adapters)."""

from __future__ import annotations

import sys
import tempfile
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


def test_comparison_skips_nonfinite_rows_and_counts_them() -> None:
    """The first H200 run (2026-11-30) compared inf/NaN logits of a random 7B model that overflows fp16: every
    max_rel_err read NaN and said nothing. Rows with inf/NaN are now counted and left out of the comparison."""
    import torch

    sys.path.insert(0, str(ENGINE))
    from prefill_graph_rows import max_rel_err, nonfinite_rows

    ref = torch.tensor([[1.0, 0.0], [float("inf"), 1.0], [0.0, 2.0]])
    out = torch.tensor([[1.0, 0.1], [1.0, 1.0], [0.0, float("nan")]])
    assert nonfinite_rows(ref) == 1 and nonfinite_rows(out) == 1
    assert abs(max_rel_err(out, ref) - 0.1) < 1e-6  # row 0 only: rows 1 and 2 are non-finite in one of the two
    assert max_rel_err(out[1:], ref[1:]) != max_rel_err(out[1:], ref[1:])  # no finite row in both: NaN


def test_weight_scale_and_markdown_of_the_prefill_graphs_run() -> None:
    import torch

    sys.path.insert(0, str(ENGINE))
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.quant_weights import QuantMatrix
    from llama_shapes import TINY
    from prefill_graphs_run import scale_linears, to_markdown
    from random_model import random_weights, write_config

    with tempfile.TemporaryDirectory() as tmp:
        c = load_model_config(write_config(TINY, Path(tmp) / "tiny"))
    w = random_weights(c, "int4", torch.device("cpu"), torch.float32)
    before = [p.scales.clone() for layer in w.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)
              for p in m.parts]  # fmt: skip
    scale_linears(w, 0.125)
    after = [p.scales for layer in w.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down) for p in m.parts]
    assert isinstance(w.layers[0].qkv, QuantMatrix) and all(torch.equal(a, b * 0.125) for a, b in zip(after, before))
    meta = dict(date="2026-11-30", command="x", device="d", torch="t", shape="7b", quant="int4", context=512,
                weight_scale=0.125, wall_s=1.0)  # fmt: skip
    rows = [dict(case="p", prefill_graphs=0, tokens=128, seqs=1, step_ms=8.0, host_ms=7.0, nonfinite=0),
            dict(case="p", prefill_graphs=1, tokens=128, seqs=1, step_ms=4.0, host_us=200.0, capture_ms=300.0,
                 max_rel_err=1e-3, nonfinite=0),
            dict(case="q", prefill_graphs=0, tokens=512, seqs=1, step_ms=20.0, host_ms=9.0, nonfinite=2),
            dict(case="r", prefill_graphs=0, tokens=2048, seqs=1, step_ms=40.0, host_ms=9.0, nonfinite=0),
            dict(case="r", prefill_graphs=1, tokens=2048, seqs=1, step_ms=40.0, host_us=0.0, capture_ms=40.0,
                 max_rel_err=0.0, nonfinite=0, graphed=False)]  # fmt: skip
    md = to_markdown(meta, rows)
    assert "| r | 2048 | 1 | 40.00 | 40.00 (eager) | 1.00x |" in md  # over the runner's token cap
    assert "| p | 128 | 1 | 8.00 | 4.00 | 2.00x | 16000 | 32000 | 7.0 | 200 | 300 | 1.0e-03 | 0 / 0 |" in md
    assert "| q | 512 | 1 | 20.00 | - | - | 25600 | - | 9.0 | - | - | - | 2 / - |" in md
