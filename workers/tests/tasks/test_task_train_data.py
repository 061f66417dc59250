"""Training data helpers: label balancing, padding/masking, recipes."""

import pytest
import torch
from inlaid_worker.tasks.example import Example
from inlaid_worker.train.data import IGNORE, balance_by_target, collate
from inlaid_worker.train.recipe import RECIPES, get_recipe


def test_balance_by_target_equalises_and_is_seeded() -> None:
    exs = [Example(f"y{i}", "q", "yes", ["yes"]) for i in range(7)] + [
        Example(f"n{i}", "q", "no", ["no"]) for i in range(3)
    ]
    a, b = balance_by_target(exs, 0), balance_by_target(exs, 0)
    assert [e.id for e in a] == [e.id for e in b]
    assert sum(e.target == "yes" for e in a) == sum(e.target == "no" for e in a) == 3
    with pytest.raises(ValueError):
        balance_by_target(exs[:7], 0)


def test_collate_pads_right_and_masks() -> None:
    batch = collate([([5, 6, 7], [IGNORE, 6, 7]), ([8], [8])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["labels"].dtype == torch.long


def test_recipes_spread_ranks_and_targets() -> None:
    assert {r.rank for r in RECIPES.values()} == {8, 16, 32, 64}
    assert {len(r.targets) for r in RECIPES.values()} >= {2, 4, 7}
    assert get_recipe("boolq", rank=4).rank == 4
    with pytest.raises(ValueError):
        get_recipe("nope")
    with pytest.raises(ValueError):
        get_recipe("boolq", epochs=0)
