"""A follower: brings this worker to the checkpoint version another worker (the quantizer) is building or has
published in the shared store, layer by layer, through the same swap path the quantizer uses for its own
layers (OnboardManager.swap_layer: built on the host, swapped in on the engine thread between two steps).

Sources, in order of preference:
  - the staging directory of a run in progress whose task set is the one asked for (layer_store.py): each
    layer is swapped in as soon as the quantizer has staged it; the follow ends once the quantizer has
    published that version (`current.json`);
  - the published version with that task set (a worker that missed the run catches up from it).
If the run fails, or nothing shows up in time, the layers that were serving before are put back and the follow
fails with the reason. If its owner stops renewing its lease, the follower waits up to `takeover_s` for another
worker to take the run over (failover) before it gives up the same way. A new owner that resumed the run lists
the layers it kept from the dead one under the same sha256: the follower keeps the ones it already swapped in
and goes on from the next (`layers_kept` counts them); a run restarted from other inputs makes it put its old
layers back and follow the new run from layer 0. `stop` (set by distribute.py when this worker takes the run
over itself) ends the follow as failed, with the previous weights back.
"""

from __future__ import annotations

import logging
import threading
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
TAKEOVER_S = 2 * LEASE_S  # after the owner's lease ran out: how long to wait for a new owner to resume the run


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
        takeover_s: float = TAKEOVER_S,
    ) -> None:
        self.manager, self.store, self._served = manager, store, served
        self.wait_s, self.poll_s, self.lease_s, self.takeover_s = wait_s, poll_s, lease_s, takeover_s
        self.layers_kept = 0  # layers not swapped again because a resumed run kept them (same sha256)

    def run(
        self, job: RequantizeJob, tasks: tuple[str, ...], on_done: Callable[[int], None],
        stop: threading.Event | None = None,
    ) -> None:
        """Follow until done or failed; publishes the job's events (planned, one per layer, done | failed)."""
        original = self.manager.serving_layers()
        try:
            version = self._follow(job, tuple(sorted(tasks)), original, stop or threading.Event())
            self.manager.commit_layers()
            on_done(version)
            job.publish(Progress("done", checkpoint_version=version, tasks=tuple(sorted(tasks))))
            log.info("following: checkpoint v%d serving (tasks %s)", version, sorted(tasks))
            self.manager.release_job_memory()
        except Exception as exc:  # put back what served before, report why
            log.warning("following failed (%s); restoring the previous weights", exc)
            try:
                self.manager.restore_layers(original)
            except Exception:
                log.exception("could not restore the previous weights")
            job.publish(Progress("failed", message=str(exc) or type(exc).__name__))
            self.manager.release_job_memory()

    def _follow(
        self, job: RequantizeJob, tasks: tuple[str, ...], original: Sequence[Any], stop: threading.Event,
    ) -> int:
        target: _Staging | _Published | None = None
        next_layer = 0
        swapped: dict[int, str] = {}  # layer -> sha256 of the staged file swapped in
        give_up = time.monotonic() + self.wait_s
        stale_since: float | None = None
        while True:
            if stop.is_set():
                raise FollowFailed("stopped: this worker takes the run over as its quantizer")
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
            if m is not None and m.run_id != target.run_id and _continues(m, tasks, swapped):
                log.info("the run of v%d was resumed by %s; keeping the %d layer(s) swapped in, going on at layer %d",
                         m.version, m.owner, len(swapped), next_layer)
                self.layers_kept += len(swapped)
                target, stale_since = _Staging(m.version, m.run_id), None
                continue
            if m is None or m.run_id != target.run_id:  # restarted from other inputs: start over with its run
                log.info("the run of v%d was restarted; following the new one from layer 0", target.version)
                if next_layer:
                    self.manager.restore_layers(original)
                target, next_layer, swapped, give_up = None, 0, {}, time.monotonic() + self.wait_s
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
                swapped[next_layer] = m.layers[next_layer].sha256
                next_layer += 1
                continue
            if m.num_layers and next_layer >= m.num_layers and self.manager.versions.current().number >= m.version:
                return m.version
            if self.store.lease_age(m.version) <= self.lease_s:
                stale_since = None
            else:  # the owner is gone: wait a while for a new owner to take the run over
                stale_since = time.monotonic() if stale_since is None else stale_since
                if time.monotonic() - stale_since >= self.takeover_s:
                    raise FollowFailed(f"the quantizer {m.owner} stopped (no lease renewal for {self.lease_s:.0f} s) "
                                       f"after {len(m.layers)} of {m.num_layers or '?'} layers of v{m.version}, and "
                                       f"no worker took the run over within {self.takeover_s:.0f} s")
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


def _continues(m: Manifest, tasks: tuple[str, ...], swapped: dict[int, str]) -> bool:
    """`m` (a new run of the followed version) resumed the followed run: same task set, not failed, and it lists
    every layer swapped in here under the same sha256."""
    return m.tasks == tasks and m.status != "failed" and all(
        i in m.layers and m.layers[i].sha256 == sha for i, sha in swapped.items())
