"""`update_checkpoint` in a child process (see background.py for why): the child writes the new checkpoint to
`out` and sends each finished layer's packed weights back over a pipe; the parent iterates over them
(`layers()`), swaps them in, and publishes the version once the child reports done.

How the child starts (`start`: WorkerConfig.quantizer_start, `--quantizer-start` / `INLAID_QUANTIZER_START`, read
once at start-up): `forkserver` (default) forks it from a fork server, a fresh
interpreter the worker starts on its first re-quantization that has imported `PRELOAD` (torch, safetensors,
transformers' model-independent core, inlaid_worker.quant: what every child needs whatever the model family,
most of a spawned child's 11-13 s start-up on the loaded 2-core dev VM, now paid once per worker). It never
initialises CUDA (importing these modules does not; the child does, after the fork) and is not a fork of the
worker (no gRPC or engine threads). It keeps the environment the worker had when it started (the worker does
not change its environment; what inlaid_worker modules read at import time is the worker's too). `spawn`
starts a fresh interpreter per child as before (every import paid by every child).

After each layer the child runs `AFTER_LAYER` (memory.py: "trim" hands the heap memory glibc holds free back to
the OS; measured by bench/onboard/quantizer_memory.py, which also measures the other steps by setting it in the
worker: the value travels in the payload, so it reaches a child of either start method).

Messages are pickled with the plain pickle protocol (tensors copied, no shared-memory handles) so nothing
outlives the child. A child that dies without a word (killed, out of memory) is reported with its exit code.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inlaid_worker.config import QUANTIZER_STARTS
from inlaid_worker.quant import LayerResult, TaskData
from inlaid_worker.quant.layerwise import ReuseFn

from .background import BackgroundLimits, Pacer
from .memory import RELEASE_STEPS, release

JOIN_TIMEOUT_S = 10.0
# imported once by the fork server: model-family independent (no transformers.models.<family> module)
PRELOAD = ("torch", "safetensors.torch", "transformers", "transformers.modeling_utils", "inlaid_worker.quant")
# memory.release steps the child runs after each layer, read when a QuantizerProcess is made
AFTER_LAYER: tuple[str, ...] = ("trim",)


def child_context(method: str = "forkserver") -> Any:
    """The multiprocessing context children start from: one of QUANTIZER_STARTS (never `fork`: the worker has gRPC
    and engine threads)."""
    if method not in QUANTIZER_STARTS:
        raise ValueError(f"the quantizer start method must be one of {', '.join(QUANTIZER_STARTS)}, got {method!r}")
    ctx = mp.get_context(method)
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))  # takes effect when this process starts its fork server
    return ctx


def _child(conn: Connection, payload: bytes) -> None:
    import torch

    from inlaid_worker.quant import update_checkpoint

    args: dict[str, Any] = pickle.loads(payload)
    limits: BackgroundLimits = args.pop("limits")
    after_layer: tuple[str, ...] = args.pop("after_layer")
    if limits.nice:
        os.nice(limits.nice)
    torch.set_num_threads(limits.threads)
    pacer = Pacer(limits.max_share)

    def on_layer(res: LayerResult) -> None:
        conn.send_bytes(pickle.dumps(("layer", res.layer, res.num_layers, res.packed, res.seconds, res.reused)))
        release(after_layer)
        pacer.pause()

    try:
        update_checkpoint(args["ckpt"], args["model_dir"], args["out"], add=args["add"], remove=args["remove"],
                          device=args["device"], on_layer=on_layer, reuse=args["reuse"])
        conn.send_bytes(pickle.dumps(("done", pacer.slept)))
    except Exception as exc:  # reported to the parent, which restores the serving weights
        conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


class QuantizerProcess:
    def __init__(
        self, ckpt: Path, model_dir: Path, out: Path, add: Sequence[TaskData], remove: Sequence[str],
        device: str, limits: BackgroundLimits, reuse: ReuseFn | None = None, *, start: str = "forkserver",
    ) -> None:
        ctx = child_context(start)
        unknown = [s for s in AFTER_LAYER if s not in RELEASE_STEPS]
        if unknown:
            raise ValueError(f"AFTER_LAYER steps must be among {', '.join(RELEASE_STEPS)}, got {unknown}")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        payload = pickle.dumps({"ckpt": ckpt, "model_dir": model_dir, "out": out, "add": list(add),
                                "remove": list(remove), "device": device, "limits": limits,
                                "reuse": reuse,  # a picklable reuse (layer_store.StagedLayers) or None
                                "after_layer": AFTER_LAYER})
        self._proc = ctx.Process(target=_child, args=(child_conn, payload), name="inlaid-requantize", daemon=True)
        self._proc.start()
        child_conn.close()
        self.slept = 0.0  # seconds the child paused for max_share

    def layers(self) -> Iterator[LayerResult]:
        """Each finished layer, in order; raises RuntimeError when the child fails or dies."""
        while True:
            try:
                msg = pickle.loads(self._conn.recv_bytes())
            except EOFError:
                self._proc.join(JOIN_TIMEOUT_S)
                raise RuntimeError(f"the quantizer process died (exit code {self._proc.exitcode})") from None
            if msg[0] == "layer":
                _, layer, num_layers, packed, seconds, reused = msg
                yield LayerResult(layer, num_layers, packed, {}, None, {}, seconds, reused=reused)
            elif msg[0] == "done":
                self.slept = float(msg[1])
                self._proc.join(JOIN_TIMEOUT_S)
                return
            else:
                raise RuntimeError(msg[1])

    def close(self) -> None:
        """Stop the child if it still runs (after a failure in the parent) and release the pipe."""
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(JOIN_TIMEOUT_S)
        self._conn.close()
