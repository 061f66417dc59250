"""table_array: a sequence's kept int64 copy of its block table equals the table at every step: grown by appended
blocks (the same array, extended), rebuilt after a preemption and when the table changed in a way a running
sequence's table never does (shorter, or another last block)."""

from __future__ import annotations

from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import Sequence
from inlaid_worker.engine.table_copy import table_array


def seq_with(table: list[int]) -> Sequence:
    seq = Sequence("s", [1, 2, 3], SamplingParams())
    seq.block_table = table
    return seq


def test_appended_blocks_extend_the_same_copy() -> None:
    seq = seq_with([])
    first = table_array(seq)
    assert first.tolist() == [] and first.typecode == "q"
    for block in (7, 3, 11, 2):
        seq.block_table.append(block)
        copy = table_array(seq)
        assert copy is first and copy.tolist() == seq.block_table
    assert table_array(seq) is first  # unchanged table: the copy as it is


def test_a_preemption_rebuilds_even_when_the_last_block_matches() -> None:
    seq = seq_with([1, 2, 3])
    old = table_array(seq)
    seq.block_table.clear()  # freed at the preemption, readmitted with other blocks; block 3 is at index 2 again
    seq.block_table.extend([9, 8, 3, 4])
    seq.num_preemptions += 1
    copy = table_array(seq)
    assert copy is not old and copy.tolist() == [9, 8, 3, 4]


def test_a_table_changed_otherwise_is_rebuilt() -> None:
    seq = seq_with([1, 2, 3])
    table_array(seq)
    seq.block_table[2] = 5  # another last block (never done to a running sequence's table)
    assert table_array(seq).tolist() == [1, 2, 5]
    del seq.block_table[1:]  # shorter
    assert table_array(seq).tolist() == [1]
    seq.block_table.extend([4, 6])
    assert table_array(seq).tolist() == [1, 4, 6]
