"""A sequence's block table as array('q'), kept on the sequence between steps (the step builder's block_tables).

Converting a list of Python ints to int64 costs ~10 ns an entry on the CPU: at 16 rows of ~1,200 tokens (80 blocks
each) that was half of build_step_input. A table only grows while its sequence runs: BlockManager.allocate appends
blocks; free clears the table only when the sequence is preempted (Scheduler._preempt, which bumps
num_preemptions) or finished; acquire fills an empty table at admission. So the copy made at an earlier step stays
a prefix of the table until the next preemption: each step converts only the blocks appended since. The copy is
rebuilt from scratch when num_preemptions changed, when the table is shorter than the copy, or when the copy's last
block is not the table's (a guard against a change to the block manager that this module would not know of).
"""

from __future__ import annotations

from array import array

from inlaid_worker.engine.sequence import Sequence


def table_array(seq: Sequence) -> array:
    """seq.block_table as array('q') (the caller must not modify it: it is kept for the next step)."""
    table = seq.block_table
    kept = seq.table_copy
    if kept is not None and kept[0] == seq.num_preemptions:
        copy = kept[1]
        n = len(copy)
        if n <= len(table) and (n == 0 or copy[n - 1] == table[n - 1]):
            if n < len(table):
                copy.extend(table[n:])  # array.extend of a list: the new blocks only
            return copy
    copy = array("q", table)
    seq.table_copy = (seq.num_preemptions, copy)
    return copy
