"""One re-quantization per checkpoint store, shared by every worker that serves from that store.

The gateway picks one worker of a store group as the quantizer (Requantize) and asks the others to follow
(FollowCheckpoint). On the quantizer, this Distributor is the manager's layer sink: each finished layer is
staged in the store (layer_store.py) before the quantizer swaps it into its own model, and the run is
marked done or failed at the end. On a follower it runs a Follower (follow.py). It also keeps what the
gateway reads back through GetInfo: the checkpoint version this worker serves (all of its layers swapped
in), the store's id, and how many runs this process quantized.

A worker is either the quantizer of one run or a follower of one, never both. A worker asked to quantize
while another live owner holds the store's run, or while it serves an older version than the store's
latest, answers busy (the gateway retries; a lagging worker first catches up from the store). A follower
asked to quantize the run it follows after that run's owner died (lease expired) or failed stops following
(its previous weights are put back) and takes the run over.

Resume: a quantizer starting version N where an earlier run of N from the same inputs (run_inputs.py) left
staged layers keeps those whose sha256 still matches (LayerStore.reusable), lists them in its first manifest
and skips their GPTQ; it still swaps them into its own model. Counted in `layers_reused` next to
`layers_quantized`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from inlaid_worker.quant import LayerResult, TaskData
from inlaid_worker.quant.layerwise import ReuseFn

from .checkpoint_weights import packing_of
from .follow import Follower
from .job import RequantizeJob
from .layer_store import LEASE_S, LayerStore, Manifest, StagedLayers, StagingWriter
from .manager import SWAP_TIMEOUT_S, AddRequest, OnboardManager, RequantizeBusy
from .run_inputs import run_inputs
from .versions import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointStatus:
    version: int
    store_id: str
    quantizer_runs: int
    quantizing: bool
    following: bool


class Distributor:
    def __init__(
        self, manager: OnboardManager, worker_id: str, *, served_version: int | None = None,
        follower: Follower | None = None,
    ) -> None:
        self.manager = manager
        self.store = LayerStore(manager.versions.store)
        self.owner = f"{worker_id}@{socket.gethostname()}:{os.getpid()}"
        self.store_id = self.store.store_id()
        # the version install_checkpoint loaded at start (default: the store's current one)
        self.served_version = manager.versions.current().number if served_version is None else served_version
        self.quantizer_runs = 0
        self.layers_quantized = self.layers_reused = 0  # as the quantizer: GPTQ run here / taken over from a staged run
        self.follower = follower or Follower(manager, self.store, lambda: self.served_version)
        self._lock = threading.Lock()
        self._follow: tuple[tuple[str, ...], RequantizeJob] | None = None
        self._stop_follow = threading.Event()
        self._writer: StagingWriter | None = None
        manager.layer_sink = self

    # ---- roles ---------------------------------------------------------------------------------------------
    def status(self) -> CheckpointStatus:
        return CheckpointStatus(self.served_version, self.store_id, self.quantizer_runs,
                                self.manager.running is not None, self._following() is not None)

    def submit(self, add: Sequence[AddRequest], remove: Sequence[str]) -> RequantizeJob:
        """Run (or attach to) the store's re-quantization on this worker, as its quantizer."""
        with self._lock:
            following = self._following()
            if following is not None and self._owner_gone(following[0]):
                self._hand_over(following[1])
                following = self._following()
            if following is not None:
                raise RequantizeBusy(f"this worker is following v{self._target(following)} from the store; retry")
            current = self.manager.versions.current()
            if self.served_version < current.number:
                self._start_follow(tuple(current.tasks))
                raise RequantizeBusy(f"this worker serves v{self.served_version} and the store is at "
                                     f"v{current.number}; catching up first, retry")
            m = self.store.active()
            if (m is not None and m.status == "running" and m.owner != self.owner
                    and self.store.lease_age(m.version) < LEASE_S):
                raise RequantizeBusy(f"{m.owner} is re-quantizing v{m.version} of this checkpoint store; retry")
            return self.manager.submit(add, remove)

    def follow(self, tasks: Sequence[str]) -> RequantizeJob:
        """Follow the run (or published version) producing `tasks`; attaches to a follow of the same set."""
        want = tuple(sorted(tasks))
        with self._lock:
            if self.manager.running is not None:
                raise RequantizeBusy("this worker is the quantizer of the running re-quantization")
            following = self._following()
            if following is not None:
                if following[0] == want:
                    return following[1]
                raise RequantizeBusy(f"this worker is following v{self._target(following)} for {list(following[0])}")
            return self._start_follow(want)

    def _start_follow(self, tasks: tuple[str, ...]) -> RequantizeJob:
        job = RequantizeJob((), ())
        self._follow = (tasks, job)
        self._stop_follow = stop = threading.Event()
        threading.Thread(target=self.follower.run, args=(job, tasks, self._followed, stop), name="follow",
                         daemon=True).start()
        return job

    def _owner_gone(self, tasks: tuple[str, ...]) -> bool:
        """The followed run (the store's latest, for `tasks`, newer than what this worker serves) is another
        owner's, and that owner failed or died (its lease ran out)."""
        m = self.store.active()
        return (m is not None and m.tasks == tasks and m.version > self.served_version and m.owner != self.owner
                and (m.status == "failed" or (m.status == "running" and self.store.lease_age(m.version) >= LEASE_S)))

    def _hand_over(self, job: RequantizeJob) -> None:
        """Stop following a run whose owner is gone, so this worker can take it over (the follow puts the
        previous weights back first; the staged layers are reused by this worker's run, swapped in again)."""
        log.info("the quantizer of the followed run is gone; stopping the follow to take the run over")
        self._stop_follow.set()
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.01)

    def _followed(self, version: int) -> None:
        self.served_version = max(self.served_version, version)

    def _following(self) -> tuple[tuple[str, ...], RequantizeJob] | None:
        f = self._follow
        return f if f is not None and not f[1].finished else None

    @staticmethod
    def _target(following: tuple[tuple[str, ...], RequantizeJob]) -> int:
        events = following[1].events
        return events[0].checkpoint_version if events else 0

    # ---- LayerSink: this worker is the quantizer -------------------------------------------------------------
    def begin(
        self, job: RequantizeJob, number: int, base: Version, add: Sequence[TaskData], remove: Sequence[str],
        device: str,
    ) -> ReuseFn | None:
        planned = next((e.tasks for e in job.events if e.stage == "planned"), ())
        group_size, sym = packing_of(base.path)
        inputs = run_inputs(base.number, base.path, self.manager.model_dir, add, remove, device)
        manifest = Manifest(number, uuid.uuid4().hex, self.owner, base.number, tuple(sorted(planned)), job.added,
                            job.removed, group_size, sym, inputs=inputs)
        kept = self.store.reusable(manifest)
        if kept:
            old = self.store.manifest(number)
            manifest = replace(manifest, layers=kept, reused=tuple(sorted(kept)),
                               num_layers=old.num_layers if old is not None else 0,
                               resumed_from=old.run_id if old is not None else "")
        self._writer = StagingWriter(self.store, manifest)
        self._writer.begin()
        self.quantizer_runs += 1
        if kept:
            log.info("quantizer for v%d (tasks %s): resuming run %s, %d staged layer(s) reused %s", number,
                     list(manifest.tasks), manifest.resumed_from, len(kept), sorted(kept))
            return StagedLayers(self._writer.dir, tuple(sorted(kept.items())))
        log.info("quantizer for v%d (tasks %s): staging layers in %s", number, list(manifest.tasks), self._writer.dir)
        return None

    def layer(self, job: RequantizeJob, res: LayerResult) -> None:
        if res.reused:
            self.layers_reused += 1
        else:
            self.layers_quantized += 1
        if self._writer is not None:
            self._writer.add_layer(res.layer, res.num_layers, res.packed, reused=res.reused)

    def end(self, job: RequantizeJob, number: int, error: BaseException | None) -> None:
        writer, self._writer = self._writer, None
        if error is None:
            self.served_version = number
        if writer is not None:
            writer.end("done" if error is None else "failed", "" if error is None else (str(error) or type(error).__name__))
