"""Stacked per-module adapter pools for the kernels: slot writes, reuse after eviction, rank growth."""

import torch
from factories import make_lora_adapter
from inlaid_worker.lora.pools import LoraPools
from inlaid_worker.model.config import parse_model_config

CONFIG = parse_model_config(dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=300))  # fmt: skip


def test_slot_reuse_leaves_no_trace_of_the_previous_adapter() -> None:
    pools = LoraPools(CONFIG, num_slots=3, device=torch.device("cpu"), dtype=torch.float32)
    big = make_lora_adapter(CONFIG, rank=8, targets=["q_proj", "down_proj"], seed=1)
    small = make_lora_adapter(CONFIG, rank=2, targets=["q_proj", "v_proj"], seed=2)
    pools.write(1, big)
    pools.clear(1)
    pools.write(1, small)
    q = pools.get(0, "q_proj")
    assert q is not None and q.ranks.tolist() == [0, 2, 0] and pools.slot_ranks == [0, 2, 0]
    a, b = small.weights[(0, "q_proj")]
    torch.testing.assert_close(q.a[1, :2], a)
    torch.testing.assert_close(q.b[1, :2], b.t())
    assert q.a[1, 2:].abs().sum() == 0 and q.b[1, 2:].abs().sum() == 0  # the rank-8 rows are gone
    assert pools.get(1, "down_proj").ranks.tolist() == [0, 0, 0]  # type: ignore[union-attr]
    assert float(q.scalings[1]) == small.scale


def test_a_larger_rank_grows_the_pool_and_keeps_loaded_slots() -> None:
    pools = LoraPools(CONFIG, num_slots=2, device=torch.device("cpu"), dtype=torch.float32)
    first = make_lora_adapter(CONFIG, rank=2, targets=["o_proj"], seed=3)
    pools.write(0, first)
    pools.write(1, make_lora_adapter(CONFIG, rank=16, targets=["o_proj"], seed=4))
    o = pools.get(1, "o_proj")
    assert o is not None and tuple(o.a.shape) == (2, 16, 32) and o.ranks.tolist() == [2, 16]
    torch.testing.assert_close(o.a[0, :2], first.weights[(1, "o_proj")][0])


def test_active_skips_modules_no_resident_adapter_targets_and_version_tracks_it() -> None:
    pools = LoraPools(CONFIG, num_slots=2, device=torch.device("cpu"), dtype=torch.float32)
    pools.write(0, make_lora_adapter(CONFIG, rank=4, targets=["q_proj", "gate_proj"], seed=5))
    pools.write(1, make_lora_adapter(CONFIG, rank=4, targets=["q_proj"], seed=6))
    v = pools.version
    assert pools.active(0, "gate_proj") is not None and pools.r_max == 4
    pools.clear(0)  # gate_proj loses its last adapter: kernels skip it, captured graphs must be redone
    assert pools.active(0, "gate_proj") is None and pools.get(0, "gate_proj") is not None
    assert pools.active(0, "q_proj") is not None and pools.version > v
    v = pools.version
    pools.clear(1)
    assert pools.active(1, "q_proj") is None and pools.version > v
