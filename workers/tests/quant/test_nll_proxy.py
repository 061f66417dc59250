"""bench/quality/nll.py: batched, right-padded answer NLL equals a per-example loop over full logits."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from factories import make_tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "quality"))
from nll import answer_nll  # noqa: E402


def test_answer_nll_matches_unbatched_reference(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(make_tiny_llama(tmp_path / "m")), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    encoded = [(torch.randint(0, 320, (n,), generator=g).tolist(), p) for n, p in [(9, 5), (4, 1), (12, 10)]]
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, n_prompt in encoded:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)  # [S, V]
            for pos in range(n_prompt, len(ids)):
                total -= float(logp[pos - 1, ids[pos]])
                count += 1
    got = answer_nll(model, encoded, batch=2)
    assert abs(got - total / count) < 1e-4
    assert abs(answer_nll(model, encoded[:1]) - answer_nll(model, encoded[:2])) > 1e-3  # examples matter
