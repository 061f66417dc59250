"""The worker's onboarding manager: validates an add/remove request against the served checkpoint, runs at
most one incremental re-quantization at a time in the background (a child process by default, see
background.py), swaps each finished layer into the serving runner between engine steps (built on the host
by the manager's thread, moved to the device on the engine thread), publishes the new checkpoint version,
and on any failure restores the layers that were serving before the job started.

Idempotence: tasks already in the current checkpoint are not added again and removals of absent tasks are
skipped, so a retried request is a no-op (answered with the current version); a request covered by the
running job attaches to it.

Memory: once a job has published its outcome (done or failed; also at the end of a follow) the worker runs
`AFTER_JOB` (release_job_memory; memory.py: "trim" gives the memory glibc holds free in its arenas back to the OS:
the job's staged layers and host copies were freed but glibc kept them, 0.45-0.6 GB above the idle size on
SmolLM2-135M, 1.05 GB RSS after a job with the trim, below idle; bench/results/quantizer-memory-2026-11-30-s10b.md).
Off by default (AFTER_JOB empty): the host copies live in the engine thread's malloc arena, and malloc_trim holds
that arena's lock while it returns the pages (a thread allocating from the same arena waited 90-98 ms while 1 GiB
was trimmed in a C test on this VM, review of session 10), so at a 7B's GBs of host copies one decode step could
stall for a sizeable fraction of a second. The freed memory is reused by the next job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from inlaid_worker.quant import LayerResult, TaskData, plan_update, update_checkpoint
from inlaid_worker.quant.adapter import load_task_adapter
from inlaid_worker.quant.calib import load_calibration
from inlaid_worker.quant.layerwise import ReuseFn

from .background import BackgroundLimits, Pacer
from .checkpoint_weights import layer_from_packed, matrices_to, packing_of
from .job import Progress, RequantizeJob
from .layer_swap import copy_layer_into, host_copy
from .memory import release
from .quantizer_process import QuantizerProcess
from .versions import CheckpointVersions, Version

log = logging.getLogger(__name__)
LoopCall = Callable[[Callable[[Any], Any]], "Future[Any]"]  # EngineLoop.call: fn(engine) between steps
SWAP_TIMEOUT_S = 120.0
# memory.release steps once a job's host copies are dropped (bench/onboard/quantizer_memory.py sets it to measure)
AFTER_JOB: tuple[str, ...] = ()  # module docstring: ("trim",) hands the job's freed memory back


class RequantizeBusy(RuntimeError):
    """Another re-quantization with a different task set is running."""


class LayerSink(Protocol):
    """Sees a run from this worker's quantizer (distribute.py stages each layer for the other workers). begin()
    may return the layers an interrupted identical run already quantized (their GPTQ is skipped)."""

    def begin(self, job: RequantizeJob, number: int, base: Version, add: Sequence[TaskData], remove: Sequence[str],
              device: str) -> ReuseFn | None: ...

    def layer(self, job: RequantizeJob, res: LayerResult) -> None: ...

    def end(self, job: RequantizeJob, number: int, error: BaseException | None) -> None: ...


@dataclass(frozen=True)
class AddRequest:
    name: str
    adapter_path: str
    calibration_path: str


class OnboardManager:
    def __init__(
        self, call: LoopCall, runner: Any, versions: CheckpointVersions, model_dir: str | Path, tokenizer: Any,
        *, device: str = "cpu", calib_max_len: int = 256, background: BackgroundLimits | None = None,
        quantizer_start: str = "forkserver",
    ) -> None:
        self._call, self._runner, self.versions = call, runner, versions
        self.model_dir, self._tokenizer = Path(model_dir), tokenizer
        self._device, self._calib_max_len = device, calib_max_len
        self._quantizer_start = quantizer_start  # WorkerConfig.quantizer_start: how the child process starts
        self.background = background or BackgroundLimits()
        self._lock = threading.Lock()
        self._job: RequantizeJob | None = None
        self.on_layer_swapped: Callable[[int], None] | None = None  # test/bench hook
        self._packing: tuple[int, bool] = (0, True)  # (group_size, sym) of the checkpoint being updated
        self._undo: dict[int, Any] = {}  # layer -> host copy of what served before the job (see _put_layer)
        self._undo_job: RequantizeJob | None = None
        self.inplace_swaps = self.replaced_swaps = 0  # how swaps went (tests, benchmarks)
        self.layer_sink: LayerSink | None = None  # distribute.py: shares each finished layer with other workers

    @property
    def running(self) -> RequantizeJob | None:
        job = self._job
        return job if job is not None and not job.finished else None

    def submit(self, add: Sequence[AddRequest], remove: Sequence[str]) -> RequantizeJob:
        """Start (or attach to) a job. ValueError for bad input, RequantizeBusy while another job runs."""
        with self._lock:
            current = self.versions.current()
            present = set(current.tasks)
            adds = [a for a in add if a.name not in present]
            removes = sorted({r for r in remove if r in present})
            names = {a.name for a in adds}
            running = self.running
            if running is not None:
                if running.covers(names, set(removes)):
                    return running
                raise RequantizeBusy(f"a re-quantization adding {list(running.added)} and removing "
                                     f"{list(running.removed)} is running; retry when it is done")
            if not adds and not removes:
                job = RequantizeJob((), ())
                job.publish(Progress("done", checkpoint_version=current.number, tasks=tuple(sorted(present))))
                return job
            tasks = [self._task_data(a) for a in adds]
            plan_update(current.path, tasks, removes)  # raises ValueError with the reason
            job = RequantizeJob(tuple(sorted(names)), tuple(removes))
            planned = sorted((present - set(removes)) | names)
            job.publish(Progress("planned", tasks=tuple(planned), added=job.added, removed=job.removed))
            self._job = job
            threading.Thread(target=self._run, args=(job, tasks, removes), name="requantize", daemon=True).start()
            return job

    def _task_data(self, a: AddRequest) -> TaskData:
        load_task_adapter(a.adapter_path, self.model_dir, a.name)  # validates; AdapterError is a ValueError
        try:
            seqs = load_calibration(a.calibration_path, self._tokenizer, self._calib_max_len)
        except ValueError as e:
            raise ValueError(f"task {a.name!r}: {e}") from None
        return TaskData(a.name, Path(a.adapter_path), seqs)

    def _run(self, job: RequantizeJob, tasks: list[TaskData], removes: list[str]) -> None:
        original = self._runner.weights.layers
        number = 0
        try:
            current = self.versions.current()
            number, out = self.versions.next_dir()
            reuse = None
            if self.layer_sink is not None:
                reuse = self.layer_sink.begin(job, number, current, tasks, removes, self._device)
            self._requantize(job, current.path, out, tasks, removes, original, reuse)
            version = self.versions.publish(number, out)
            self._sink_end(job, number, None)
            self.commit_layers()  # the new version serves: nothing to put back
            job.publish(Progress("done", checkpoint_version=number, tasks=tuple(version.tasks),
                                 added=job.added, removed=job.removed))
            log.info("checkpoint v%d serving (tasks %s)", number, version.tasks)
            self.release_job_memory()
        except Exception as exc:  # anything: put the old weights back and report
            log.exception("re-quantization failed; restoring the previous weights")
            try:
                self.restore_layers(original)
            except Exception:
                log.exception("could not restore the previous weights")
            self._sink_end(job, number, exc)
            job.publish(Progress("failed", message=str(exc) or type(exc).__name__, added=job.added,
                                 removed=job.removed))
            self.release_job_memory()

    def _requantize(
        self, job: RequantizeJob, ckpt: Path, out: Path, tasks: list[TaskData], removes: list[str],
        original: Sequence[Any], reuse: ReuseFn | None = None,
    ) -> None:
        """Write the new checkpoint at `out`, swapping each finished layer in (thread or child process)."""
        limits = self.background
        self._packing = packing_of(ckpt)  # incremental updates keep the checkpoint's spec
        if limits.mode == "thread":
            pacer = Pacer(limits.max_share)

            def on_layer(res: LayerResult) -> None:
                self._sink_layer(job, res)
                self._swap_in(job, res, original)
                pacer.pause()

            update_checkpoint(ckpt, self.model_dir, out, add=tasks, remove=removes, device=self._device,
                              on_layer=on_layer, reuse=reuse)
            return
        proc = QuantizerProcess(ckpt, self.model_dir, out, tasks, removes, self._device, limits, reuse,
                                start=self._quantizer_start)
        try:
            for res in proc.layers():
                self._sink_layer(job, res)
                self._swap_in(job, res, original)
        finally:
            proc.close()

    def _sink_layer(self, job: RequantizeJob, res: LayerResult) -> None:
        if self.layer_sink is not None:
            self.layer_sink.layer(job, res)

    def _sink_end(self, job: RequantizeJob, number: int, error: BaseException | None) -> None:
        if self.layer_sink is not None and number:
            try:
                self.layer_sink.end(job, number, error)
            except Exception:
                log.exception("layer sink: could not record the end of v%d", number)

    # ---- used by follow.py: layers that another worker re-quantized, through the same swap path ----------
    def serving_layers(self) -> tuple[Any, ...]:
        return tuple(self._runner.weights.layers)

    def swap_layer(self, job: RequantizeJob, res: LayerResult, original: Sequence[Any], packing: tuple[int, bool]) -> None:
        """Swap in a layer another worker re-quantized (packed with `packing` = (group_size, sym))."""
        self._packing = packing
        self._swap_in(job, res, original)

    def commit_layers(self) -> None:
        """The new version serves (this worker's job, or a follow in follow.py): drop the host copies kept for
        restore_layers."""
        self._undo = {}

    def release_job_memory(self) -> None:
        """After a job (or a follow) published its outcome: run AFTER_JOB (module docstring), logging its time; a
        failure here is logged, never reported as the job's."""
        if not AFTER_JOB:
            return
        t0 = time.perf_counter()
        try:
            release(AFTER_JOB)
        except Exception:
            log.exception("releasing the job's memory failed")
            return
        log.info("released the job's memory (%s) in %.3f s", "+".join(AFTER_JOB), time.perf_counter() - t0)

    def restore_layers(self, original: Sequence[Any]) -> None:
        """Serve `original` again: layers swapped in place get their host copy copied back (the layer objects in
        `original` are the serving ones, their tensors overwritten); layers that were replaced get their
        untouched original object back."""
        undo, self._undo = self._undo, {}

        def back(engine: Any) -> None:
            engine.base_weights_changed()  # no KV computed on the swapped layers may be reused (prefix cache)
            w = self._runner.weights
            layers = list(w.layers)
            for i, layer in enumerate(original):
                if layers[i] is not layer:
                    layers[i] = layer  # replaced by a swap (another layout): its tensors were never written
                elif i in undo and not copy_layer_into(layer, undo[i]):
                    raise RuntimeError(f"layer {i}: its host copy does not fit the serving tensors")
            if any(a is not b for a, b in zip(layers, w.layers, strict=True)):
                self._runner.weights = replace(w, layers=tuple(layers))

        self._call(back).result(timeout=SWAP_TIMEOUT_S)
        undo.clear()  # the host copies: copied back, no longer needed

    def _swap_in(self, job: RequantizeJob, res: LayerResult, original: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        group_size, sym = self._packing
        staged = layer_from_packed(res.packed, original[res.layer], "cpu", self._runner.dtype,
                                   group_size=group_size, sym=sym)  # host work here, off the engine thread

        if job is not self._undo_job:
            self._undo, self._undo_job = {}, job
        self._put_layer(res.layer, staged)
        if self.on_layer_swapped is not None:
            self.on_layer_swapped(res.layer)
        job.publish(Progress("layer", layer=res.layer, num_layers=res.num_layers, hessian_seconds=res.seconds,
                             swap_seconds=time.perf_counter() - t0, added=job.added, removed=job.removed))

    def _put_layer(self, i: int, staged: Any) -> None:
        """Serve `staged` (built on the host) as layer i, on the engine thread between two steps (the only thread
        of this process that touches the GPU). Its tensors are copied into the serving layer's own tensors
        (layer_swap.copy_layer_into), so CUDA decode graphs keep valid addresses and nothing is recaptured, after
        a host copy of the old ones is kept for restore_layers. A layer whose layout differs replaces the layer
        object instead (the graphs then drop themselves and recapture)."""
        def swap(engine: Any) -> None:
            engine.base_weights_changed()  # no KV computed on the old layer may be reused (prefix cache)
            w = self._runner.weights
            if i not in self._undo:
                self._undo[i] = host_copy(w.layers[i])
            if copy_layer_into(w.layers[i], staged):
                self.inplace_swaps += 1
                return
            self.replaced_swaps += 1
            moved = matrices_to(staged, self._runner.device)
            self._runner.weights = replace(w, layers=w.layers[:i] + (moved,) + w.layers[i + 1:])

        self._call(swap).result(timeout=SWAP_TIMEOUT_S)

    def _set_layers(self, update: Callable[[tuple[Any, ...]], Any]) -> None:
        """Replace the runner's layer tuple on the engine thread, i.e. between two steps."""
        def swap(engine: Any) -> None:
            engine.base_weights_changed()
            w = self._runner.weights
            self._runner.weights = replace(w, layers=tuple(update(w.layers)))

        self._call(swap).result(timeout=SWAP_TIMEOUT_S)


def install_checkpoint(runner: Any, ckpt_dir: Path) -> None:
    """Make `runner` serve the checkpoint at `ckpt_dir` instead of its full-precision weights: packed (quant_matmul)
    on the triton backend, dequantized on the torch backend."""
    from inlaid_worker.model.quant_weights import load_gptq_weights

    packed = getattr(runner, "backend", "torch") == "triton"
    runner.weights = load_gptq_weights(ckpt_dir, runner.config, runner.device, runner.dtype, packed=packed)
