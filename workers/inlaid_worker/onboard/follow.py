"""A follower: brings this worker to the checkpoint version another worker (the quantizer) is building or has
published in the shared store, layer by layer, through the same swap path the quantizer uses for its own
layers (OnboardManager.swap_layer: built on the host, swapped in on the engine thread between two steps).

Sources, in order of preference:
  - the staging directory of a run in progress whose task set is the one asked for (layer_store.py): each
    layer is swapped in as soon as the quantizer has staged it; the follow ends once the quantizer has
    published that version (`current.json`);
  - the published version with that task set (a worker that missed the run catches up from it).
If the run fails, its owner stops renewing its lease, or nothing shows up in time, the layers that were
serving before are put back and the follow fails with the reason. If the run is restarted by another owner
(failover), the follower puts its old layers back and follows the new run from layer 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inlaid_worker.quant import LayerResult, PackedLinear, read_checkpoint

from .checkpoint_weights import packing_of
from .job import Progress, RequantizeJob
from .layer_store import LEASE_S, LayerStore, Manifest
from .manager import OnboardManager

log = logging.getLogger(__name__)
FOLLOW_WAIT_S = 120.0  # how long to wait for a run (or a published version) with the asked-for task set
POLL_S = 0.05


class FollowFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class _Staging:
    version: int
    run_id: str


@dataclass(frozen=True)
class _Published:
    version: int
    path: Path


class Follower:
    def __init__(
        self, manager: OnboardManager, store: LayerStore, served: Callable[[], int], *,
        wait_s: float = FOLLOW_WAIT_S, poll_s: float = POLL_S, lease_s: float = LEASE_S,
    ) -> None:
        self.manager, self.store, self._served = manager, store, served
        self.wait_s, self.poll_s, self.lease_s = wait_s, poll_s, lease_s

    def run(self, job: RequantizeJob, tasks: tuple[str, ...], on_done: Callable[[int], None]) -> None:
        """Follow until done or failed; publishes the job's events (planned, one per layer, done | failed)."""
        original = self.manager.serving_layers()
        try:
            version = self._follow(job, tuple(sorted(tasks)), original)
            self.manager.commit_layers()
            on_done(version)
            job.publish(Progress("done", checkpoint_version=version, tasks=tuple(sorted(tasks))))
            log.info("following: checkpoint v%d serving (tasks %s)", version, sorted(tasks))
        except Exception as exc:  # put back what served before, report why
            log.warning("following failed (%s); restoring the previous weights", exc)
            try:
                self.manager.restore_layers(original)
            except Exception:
                log.exception("could not restore the previous weights")
            job.publish(Progress("failed", message=str(exc) or type(exc).__name__))

    def _follow(self, job: RequantizeJob, tasks: tuple[str, ...], original: Sequence[Any]) -> int:
        target: _Staging | _Published | None = None
        next_layer = 0
        give_up = time.monotonic() + self.wait_s
        while True:
            if target is None:
                target = self._find(tasks)
                if target is None:
                    current = self.manager.versions.current()
                    if tuple(current.tasks) == tasks and current.number <= self._served():
                        return self._served()  # already serving it
                    if time.monotonic() > give_up:
                        raise FollowFailed(f"no re-quantization producing tasks {list(tasks)} appeared in the "
                                           f"checkpoint store {self.store.root} within {self.wait_s:.0f} s")
                    time.sleep(self.poll_s)
                    continue
                job.publish(Progress("planned", checkpoint_version=target.version, tasks=tasks))
            if isinstance(target, _Published):
                self._swap_published(job, target, original)
                return target.version
            m = self.store.manifest(target.version)
            if m is None or m.run_id != target.run_id:  # restarted by another owner: start over with its run
                log.info("the run of v%d was restarted; following the new one from layer 0", target.version)
                if next_layer:
                    self.manager.restore_layers(original)
                target, next_layer, give_up = None, 0, time.monotonic() + self.wait_s
                continue
            if m.status == "failed":
                raise FollowFailed(f"the quantizer {m.owner} failed: {m.message}")
            if next_layer in m.layers:
                try:
                    packed = self.store.read_layer(m, next_layer)
                except FileNotFoundError:  # a new owner wiped the directory to restart the run: seen next round
                    time.sleep(self.poll_s)
                    continue
                self._swap(job, next_layer, m.num_layers, packed, (m.group_size, m.sym), original)
                next_layer += 1
                continue
            if m.num_layers and next_layer >= m.num_layers and self.manager.versions.current().number >= m.version:
                return m.version
            if self.store.lease_age(m.version) > self.lease_s:
                raise FollowFailed(f"the quantizer {m.owner} stopped (no lease renewal for {self.lease_s:.0f} s) "
                                   f"after {len(m.layers)} of {m.num_layers or '?'} layers of v{m.version}")
            time.sleep(self.poll_s)

    def _find(self, tasks: tuple[str, ...]) -> _Staging | _Published | None:
        served = self._served()
        m: Manifest | None = self.store.active()
        if m is not None and m.version > served and m.tasks == tasks and m.status != "failed":
            return _Staging(m.version, m.run_id)
        current = self.manager.versions.current()
        if current.number > served and tuple(current.tasks) == tasks:
            return _Published(current.number, current.path)
        return None

    def _swap_published(self, job: RequantizeJob, target: _Published, original: Sequence[Any]) -> None:
        packed, _ = read_checkpoint(target.path)
        by_layer: dict[int, dict[str, PackedLinear]] = {}
        for name, p in packed.items():  # "model.layers.3.self_attn.q_proj"
            _, _, idx, path = name.split(".", 3)
            by_layer.setdefault(int(idx), {})[path] = p
        packing = packing_of(target.path)
        for i in sorted(by_layer):
            self._swap(job, i, len(by_layer), by_layer[i], packing, original)

    def _swap(
        self, job: RequantizeJob, layer: int, num_layers: int, packed: dict[str, PackedLinear],
        packing: tuple[int, bool], original: Sequence[Any],
    ) -> None:
        res = LayerResult(layer, num_layers, packed, {}, None, {}, 0.0)
        self.manager.swap_layer(job, res, original, packing)
