"""Offline sm_90 PTX check of quant_tcs's ring-slot release (for test_quant_tcs.py; no GPU).

A consumer warpgroup's K loop waits on a slot's `ready` mbarrier (try_wait), reads the slot's words from shared memory
(ld.shared), builds the operand and runs the wgmma, then gives the slot back to the producer (mbarrier.arrive on the
slot's `empty` barrier). The arrival must come after a `wgmma.wait_group`: released earlier, the producer's next TMA
copy may overwrite the slot while a warp's reads of it are still to go into the wgmma (session 12's "tcs", kept as the
bench kind "tcs0", got sporadically wrong results at block_m 16; session 13).

`k_loops(ptx)` finds the consumer K loops (the innermost loops holding a wgmma.mma_async, labelled blocks with a
backward branch) and `early_releases(loop)` walks one iteration from its ready wait (the body rotated so that it
starts at the try_wait: the next iteration's top, where PIPE releases the previous slot, comes after this one's
wait_group) and counts the empty-barrier arrivals that follow a slot read with no wgmma.wait_group in between.

Known limits (the check is a walk over one iteration's text, not a data-flow analysis):
- `waited` never resets: once a wgmma.wait_group has been seen, every later arrival of the iteration passes, even
  one after a further slot read that no later wait covers (a loop read-wait-read-release would not be flagged);
- SLOT_READ matches every ld.shared, the staged scale and zero reads included, not only the slot's words: an arrival
  after such a read and before the wait counts as early (a false alarm, never a missed one).
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_BACK = re.compile(r"\bbra(\.uni)?\s+(\$L__BB\d+_\d+);")
TRY_WAIT = "mbarrier.try_wait"
SLOT_READ = "ld.shared"
WAIT_GROUP = "wgmma.wait_group"
MMA = "wgmma.mma_async"


def _is_release(ins: str) -> bool:
    """An mbarrier arrival (the producer's arrive.expect_tx on a ready barrier is not a release)."""
    return "mbarrier.arrive" in ins and "expect_tx" not in ins


def _lines(ptx: str) -> list[str]:
    return [s for raw in ptx.splitlines() if (s := raw.split("//")[0].strip())]


def k_loops(ptx: str) -> list[list[str]]:
    """The instructions of each innermost loop (label .. backward branch to it) that holds a wgmma, in PTX order."""
    lines = _lines(ptx)
    where = {m.group(1): i for i, s in enumerate(lines) if (m := _LABEL.match(s))}
    spans = sorted((where[m.group(2)], i) for i, s in enumerate(lines)
                   if (m := _BACK.search(s)) and where.get(m.group(2), i) < i)  # fmt: skip
    with_mma = [(lo, hi) for lo, hi in spans if any(MMA in s for s in lines[lo:hi])]
    inner = [r for r in with_mma if not any(o != r and r[0] <= o[0] and o[1] <= r[1] for o in with_mma)]
    return [lines[lo : hi + 1] for lo, hi in inner]


def early_releases(loop: list[str]) -> int:
    """Arrivals that follow a slot read after the ready wait with no wgmma.wait_group between them (one iteration
    from the try_wait, wrapping around the back edge). The loop must hold exactly one try_wait, a slot read after it,
    a wgmma wait and a release (ValueError otherwise: the check would say nothing)."""
    waits = [i for i, s in enumerate(loop) if TRY_WAIT in s]
    if len(waits) != 1:
        raise ValueError(f"expected one ready wait in the K loop, found {len(waits)}")
    it = loop[waits[0] :] + loop[: waits[0]]
    if not any(SLOT_READ in s for s in it) or not any(WAIT_GROUP in s for s in it) or not any(map(_is_release, it)):
        raise ValueError("K loop without a slot read, a wgmma wait or a slot release")
    bad, read, waited = 0, False, False
    for ins in it:
        if SLOT_READ in ins:
            read = True
        elif WAIT_GROUP in ins:
            waited = True
        elif _is_release(ins) and read and not waited:
            bad += 1
    return bad
