"""The scheduler's waiting queue: sequences in queue order, indexed by adapter.

Order is what a deque would give: `append` puts a sequence at the back, `appendleft` (a preempted sequence) at
the front, and a scan (`scan()`) visits the queue front to back, removing the sequences it admits and leaving
the ones it passes over in place. Each sequence holds a position key (appendleft: below every key so far, append:
above), and each adapter (None = the base model) keeps its own deque of sequences in key order; a scan merges the
adapters' deques by key. When the running sequences already use every adapter slot, a waiting sequence of another
adapter can only be passed over for the rest of the step: `Scan.restrict` then drops those adapters' deques from
the merge at once, so a long queue of requests for non-resident adapters costs O(adapters) a step, not O(queue).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator

from inlaid_worker.engine.sequence import Sequence


class WaitingQueue:
    def __init__(self) -> None:
        self._key: dict[Sequence, int] = {}
        self._adapter: dict[Sequence, str | None] = {}  # the adapter a sequence was queued under
        self._queues: dict[str | None, deque[Sequence]] = {}  # per adapter, in key order
        self._front = 0  # the last key appendleft gave (keys below it are free)
        self._back = 0  # the last key append gave

    def __len__(self) -> int:
        return len(self._key)

    def __bool__(self) -> bool:
        return bool(self._key)

    def __contains__(self, seq: object) -> bool:
        return seq in self._key

    def __iter__(self) -> Iterator[Sequence]:
        """Front to back (a merge of the adapters' deques; O(n log adapters))."""
        return heapq.merge(*self._queues.values(), key=self._key.__getitem__)

    def __getitem__(self, i: int) -> Sequence:
        if not 0 <= i < len(self):
            raise IndexError("waiting queue index out of range")
        return next(itertools.islice(iter(self), i, None))

    def append(self, seq: Sequence) -> None:
        self._back += 1
        self._insert(seq, self._back, front=False)

    def appendleft(self, seq: Sequence) -> None:
        self._front -= 1
        self._insert(seq, self._front, front=True)

    def _insert(self, seq: Sequence, key: int, front: bool) -> None:
        if seq in self._key:
            raise ValueError(f"{seq.request_id} is already waiting")
        self._key[seq] = key
        self._adapter[seq] = seq.adapter
        q = self._queues.get(seq.adapter)
        if q is None:
            q = self._queues[seq.adapter] = deque()
        if front:
            q.appendleft(seq)
        else:
            q.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Takes a sequence out of the queue (ValueError if it is not waiting)."""
        if seq not in self._key:
            raise ValueError(f"{seq.request_id} is not waiting")
        adapter = self._adapter.pop(seq)
        del self._key[seq]
        q = self._queues[adapter]
        q.remove(seq)
        if not q:
            del self._queues[adapter]

    def scan(self) -> Scan:
        """A front-to-back pass (no other change to the queue while it runs, except through it)."""
        return Scan(self)


class Scan:
    """A cursor over the queue: `peek` the current sequence, then `take` it (removed from the queue) or `skip` it
    (it keeps its place); `restrict` limits the rest of the pass to some adapters (and the base model)."""

    def __init__(self, queue: WaitingQueue) -> None:
        self._q = queue
        self._index: dict[str | None, int] = {}  # per adapter: its deque's current position
        self._heap = [(queue._key[d[0]], i, a) for i, (a, d) in enumerate(queue._queues.items())]
        heapq.heapify(self._heap)

    def peek(self) -> Sequence | None:
        if not self._heap:
            return None
        _, _, adapter = self._heap[0]
        return self._q._queues[adapter][self._index.get(adapter, 0)]

    def skip(self) -> None:
        _, tie, adapter = self._heap[0]
        at = self._index.get(adapter, 0) + 1
        self._index[adapter] = at
        self._advance(adapter, at, tie)

    def take(self) -> Sequence:
        _, tie, adapter = self._heap[0]
        q = self._q._queues[adapter]
        at = self._index.get(adapter, 0)
        seq = q[at]
        del q[at]
        del self._q._key[seq], self._q._adapter[seq]
        if not q:
            del self._q._queues[adapter]
            heapq.heappop(self._heap)
        else:
            self._advance(adapter, at, tie)
        return seq

    def _advance(self, adapter: str | None, at: int, tie: int) -> None:
        q = self._q._queues[adapter]
        if at < len(q):
            heapq.heapreplace(self._heap, (self._q._key[q[at]], tie, adapter))
        else:
            heapq.heappop(self._heap)

    def restrict(self, adapters: set[str]) -> None:
        """From here on visit only the base model's sequences and those of `adapters`."""
        self._heap = [e for e in self._heap if e[2] is None or e[2] in adapters]
        heapq.heapify(self._heap)
