"""The pair-ordered norm weights of the "+dn2" decode fusion (model.weights: NormPairs, with_norm_pairs,
current_pairs) and the benchmark model's distinct norms (bench/engine/random_model.random_norms). CPU only, torch
only: nothing is launched.

with_norm_pairs keeps a weights object whose pairs are current (the decode graphs keep their captures), makes pairs
where a layer has none (load; a layer built like onboard's layer_from_packed) and anew where they are stale: a norm
replaced by another tensor (dataclasses.replace keeps the old pairs) or written in place since (torch's version
counter); current_pairs, what the forward reads, gives None for stale pairs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from inlaid_worker.model.weights import (
    LayerWeights,
    LlamaWeights,
    NormPairs,
    current_pairs,
    norm_pairs,
    with_norm_pairs,
)

ENGINE = Path(__file__).resolve().parents[3] / "bench" / "engine"
H = 16


def _layer(a: torch.Tensor, b: torch.Tensor) -> LayerWeights:
    """A layer with norms a (input) and b (post-attention); the matrices are placeholders (nothing runs them)."""
    z = torch.zeros(1)
    return LayerWeights(a, z, z, b, z, z)


def _weights(layers: int = 2) -> LlamaWeights:
    ls = tuple(_layer(torch.arange(H, dtype=torch.float16) + 100 * i, torch.arange(H, dtype=torch.float16) + 100 * i + 50)
               for i in range(layers))  # fmt: skip
    return LlamaWeights(torch.zeros(4, H), ls, torch.ones(H, dtype=torch.float16), torch.zeros(4, H))


def _order(values: torch.Tensor) -> list[float]:
    """norm_pairs' order written out: (w[k + i], w[k + 4 + i]) for i = 0..3, per 8 values."""
    v = values.tolist()
    return [v[k + j // 2 + 4 * (j % 2)] for k in range(0, len(v), 8) for j in range(8)]


def test_pairs_are_made_once_in_pair_order_with_their_sources() -> None:
    w = _weights()
    got = with_norm_pairs(w)
    assert got is not w and all(layer.norm_pairs is None for layer in w.layers)  # (w itself untouched)
    assert with_norm_pairs(got) is got  # nothing changed: the same object (the decode graphs keep their captures)
    for old, layer in zip(w.layers, got.layers, strict=True):
        p = layer.norm_pairs
        assert isinstance(p, NormPairs)
        assert p.input.tolist() == _order(old.input_norm) and p.post.tolist() == _order(old.post_norm)
        assert p.sources[0] is old.input_norm and p.sources[1] is old.post_norm
        assert p.versions == (old.input_norm._version, old.post_norm._version)
        pairs = current_pairs(layer)
        assert pairs is not None and pairs[0] is p.input and pairs[1] is p.post
    assert _order(torch.arange(16.0))[:8] == [0, 4, 1, 5, 2, 6, 3, 7]
    assert torch.equal(got.layers[0].norm_pairs.input, norm_pairs(w.layers[0].input_norm))  # type: ignore[union-attr]


def test_a_rebuilt_layer_gets_fresh_pairs_and_the_others_are_kept() -> None:
    """A layer built like onboard's layer_from_packed (a new LayerWeights on the old norms: no pairs) gets pairs; a
    layer given another norm through dataclasses.replace (its old pairs kept, stale) gets them anew; the other layers
    are the same objects."""
    w = with_norm_pairs(_weights(3))
    old0, old1, old2 = w.layers
    built = LayerWeights(old0.input_norm, old0.qkv, old0.o, old0.post_norm, old0.gate_up, old0.down)
    new_post = torch.arange(H, dtype=torch.float16) * -1
    moved = replace(old1, post_norm=new_post)
    assert moved.norm_pairs is old1.norm_pairs and current_pairs(moved) is None  # stale: never read
    got = with_norm_pairs(replace(w, layers=(built, moved, old2)))
    assert got.layers[2] is old2
    assert got.layers[0].norm_pairs is not None and got.layers[0].norm_pairs.input.tolist() == _order(old0.input_norm)
    p1 = got.layers[1].norm_pairs
    assert p1 is not None and p1.sources[1] is new_post
    assert p1.post.tolist() == _order(new_post) and p1.input.tolist() == _order(old1.input_norm)
    assert current_pairs(got.layers[1]) is not None
    # the same stale layer replaced twice over: each time its current norms
    again = with_norm_pairs(replace(got, layers=(got.layers[0], replace(got.layers[1], input_norm=new_post), old2)))
    assert again.layers[1].norm_pairs.input.tolist() == _order(new_post)  # type: ignore[union-attr]


def test_a_norm_written_in_place_is_seen() -> None:
    """copy_ into a norm, or into a view of it, bumps its version: current_pairs gives None and with_norm_pairs makes
    the pairs anew from the written values (a new weights object: the decode graphs recapture)."""
    w = with_norm_pairs(_weights())
    layer = w.layers[1]
    with torch.no_grad():
        layer.input_norm.copy_(torch.arange(H, dtype=torch.float16) * 3)
    assert current_pairs(layer) is None and current_pairs(w.layers[0]) is not None
    got = with_norm_pairs(w)
    assert got is not w and got.layers[0] is w.layers[0]
    assert got.layers[1].norm_pairs.input.tolist() == _order(layer.input_norm)  # type: ignore[union-attr]
    assert with_norm_pairs(got) is got
    layer.post_norm[8:].mul_(2)  # through a view
    assert current_pairs(got.layers[1]) is None
    assert with_norm_pairs(got).layers[1].norm_pairs.post.tolist() == _order(layer.post_norm)  # type: ignore[union-attr]


def test_norms_without_pairs() -> None:
    """bf16 / odd-length norms have no pairs (the per-thread formation reads the norm itself): the weights are kept as
    they are; a layer whose fp16 pairs went stale when its norm became bf16 drops them."""
    bf = LlamaWeights(torch.zeros(1, H), (_layer(torch.ones(H, dtype=torch.bfloat16), torch.ones(H, dtype=torch.bfloat16)),),
                      torch.ones(H), torch.zeros(1, H))  # fmt: skip
    assert with_norm_pairs(bf) is bf
    odd = LlamaWeights(torch.zeros(1, 12), (_layer(torch.ones(12, dtype=torch.float16), torch.ones(12, dtype=torch.float16)),),
                       torch.ones(12), torch.zeros(1, 12))  # fmt: skip
    assert with_norm_pairs(odd) is odd
    w = with_norm_pairs(_weights(1))
    to_bf = replace(w, layers=(replace(w.layers[0], input_norm=torch.ones(H, dtype=torch.bfloat16)),))
    assert with_norm_pairs(to_bf).layers[0].norm_pairs is None


def test_inference_tensors_are_checked_by_identity() -> None:
    """Norms made under torch.inference_mode keep no version counter: their pairs record None and are current while
    the layer holds the same tensors (an in-place write there is not seen: model.weights' docstring)."""
    with torch.inference_mode():
        a, b = torch.ones(H, dtype=torch.float16), torch.full((H,), 2.0, dtype=torch.float16)
    w = with_norm_pairs(LlamaWeights(torch.zeros(1, H), (_layer(a, b),), torch.ones(H), torch.zeros(1, H)))
    p = w.layers[0].norm_pairs
    assert p is not None and p.versions == (None, None) and current_pairs(w.layers[0]) is not None
    assert with_norm_pairs(w) is w
    assert current_pairs(replace(w.layers[0], post_norm=b.clone())) is None


def test_random_model_norms_are_distinct_and_leave_the_rest_alone(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """random_weights(norms="random"): every layer's input and post-attention norm its own tensor of U(0.5, 1.5)
    values, the same for the same seed, other tensors as with the default all-ones norms (same global seed)."""
    monkeypatch.syspath_prepend(str(ENGINE))
    import random_model as rm  # type: ignore[import-not-found]
    from inlaid_worker.model.config import load_model_config

    c = load_model_config(rm.write_config(rm.Shape(64, 128, 3, 2, 2, 32), tmp_path / "cfg"))
    cpu = torch.device("cpu")
    torch.manual_seed(3)
    ones = rm.random_weights(c, "int4", cpu, torch.float16)
    torch.manual_seed(3)
    rnd = rm.random_weights(c, "int4", cpu, torch.float16, norms="random", seed=7)
    assert all(layer.input_norm is layer.post_norm for layer in ones.layers)  # (what hid a swapped pair)
    norms = [n for layer in rnd.layers for n in (layer.input_norm, layer.post_norm)]
    assert all(n.dtype == torch.float16 and n.shape == (64,) and 0.5 <= float(n.min()) and float(n.max()) <= 1.5
               for n in norms)  # fmt: skip
    assert all(not torch.equal(x, y) for i, x in enumerate(norms) for y in norms[i + 1 :])
    assert torch.equal(rnd.embed, ones.embed) and torch.equal(rnd.lm_head, ones.lm_head)
    pairs = zip(ones.layers, rnd.layers, strict=True)
    assert all(torch.equal(a.qkv.parts[0].scales, b.qkv.parts[0].scales) for a, b in pairs)
    again = rm.random_norms(ones, seed=7)
    assert all(torch.equal(a.post_norm, b.post_norm) for a, b in zip(again.layers, rnd.layers, strict=True))
    with pytest.raises(ValueError, match="unknown norms"):
        rm.random_weights(c, "int4", cpu, torch.float16, norms="rand")
