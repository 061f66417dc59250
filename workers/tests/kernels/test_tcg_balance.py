"""quant_tcg.balance_ring (BALANCE, under PDL): the ring padding that caps a one-wave ring GEMV at ceil(programs / SMs)
programs an SM, and only where the config's own occupancy is higher (pure host arithmetic: runs on the CPU)."""

from __future__ import annotations

import pytest
from inlaid_worker.kernels.quant_tcg import BLOCK_K, balance_ring, occupancy

SMEM_SM, RESERVED = 233472, 1024


def fits(ring: int, stages: int, block_n: int, block_m: int) -> int:
    """Programs an SM holds by shared memory with `ring` slots (or STAGES) allocated."""
    slots = max(ring, stages)
    return SMEM_SM // (slots * 16 * block_n * 4 + 2 * block_m * BLOCK_K * 2 + RESERVED)


@pytest.mark.parametrize("programs,block_n,block_m", [(512, 64, 8), (264, 64, 8), (130, 64, 16), (600, 64, 8)])
def test_padding_caps_an_sm_at_the_even_share(programs: int, block_n: int, block_m: int) -> None:
    cap = -(-programs // 132)
    ring = balance_ring(programs, 4, block_n, block_m, 132, natural=7)
    assert ring > 4, ring
    assert fits(ring, 4, block_n, block_m) == cap  # exactly the even share: no fewer (a second wave), no more


def test_no_padding_where_it_cannot_or_need_not_cap() -> None:
    assert balance_ring(1376, 4, 64, 8, 132, natural=7) == 0  # multi-wave (7B gate/up M = 8)
    assert balance_ring(384, 4, 128, 8, 132, natural=3) == 0  # already 3 an SM (the n128 picks)
    assert balance_ring(512, 1, 64, 8, 132, natural=7) == 0  # register prefetch: no ring
    assert balance_ring(512, 4, 64, 8, 132, natural=4) == 0  # the config's own occupancy is the cap


def test_occupancy_matches_the_sm90_limits() -> None:
    assert occupancy(71, 20480, 4) == 7  # tc2 m8 n64 st4 (ptxas: 71 registers)
    assert occupancy(168, 36864, 4) == 3  # tc m8 n128 st4
    assert occupancy(32, 0, 4) == 16  # threads: 2048 an SM
    assert occupancy(40, 120000, 4) == 1  # shared memory
