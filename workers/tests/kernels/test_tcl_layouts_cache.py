"""quant_tcl.tcl_layouts is built once per (block_n, block_m, warps): the same layout objects every call (so a
launch's constexprs hash and compare as before), in a fresh dict a caller may change, equal to a fresh build."""

from __future__ import annotations

from inlaid_worker.kernels import quant_tcl
from inlaid_worker.kernels.quant_tcg import tcg_layouts


def test_layouts_are_cached_per_config_and_equal_to_a_fresh_build() -> None:
    a = quant_tcl.tcl_layouts(128, 64, 8)
    b = quant_tcl.tcl_layouts(128, 64, 8)
    assert a is not b and a == b
    assert all(a[k] is b[k] for k in a), "the same layout objects: built once"
    a["MMA"] = None  # a caller's dict is its own
    assert quant_tcl.tcl_layouts(128, 64, 8)["MMA"] is b["MMA"]
    fresh = tcg_layouts(128, 64, 8)
    assert all(b[k] == fresh[k] for k in ("MMA", "DOT", "L5", "L4", "XS", "CPL", "WS", "D2"))
    assert set(b) == {"MMA", "DOT", "L5", "L4", "XS", "CPL", "WS", "D2", "XCP"}
    other = quant_tcl.tcl_layouts(128, 128, 8)
    assert other["MMA"] != b["MMA"], "keyed by the arguments"


def test_tcg_layouts_are_cached_too_and_equal_to_an_uncached_build() -> None:
    from inlaid_worker.kernels import quant_tcg

    a, b = quant_tcg.tcg_layouts(64, 16, 4), quant_tcg.tcg_layouts(64, 16, 4)
    assert a is not b and all(a[k] is b[k] for k in a)
    fresh = quant_tcg.tcg_layouts.__wrapped__(64, 16, 4)  # a build that bypasses the cache
    assert fresh.keys() == a.keys() and all(fresh[k] == a[k] and fresh[k] is not a[k] for k in a)
    assert quant_tcg.tcg_layouts(64, 32, 4)["MMA"] != a["MMA"]
