"""The Worker servicer with the onboarding RPCs (ValidateAdapter, Requantize) on top of the base servicer.

Requantize streams the job's progress; the job itself runs in the manager's thread and continues if the
caller disconnects (a later identical call attaches and replays the progress). With a Distributor
(distribute.py) the run is shared with the workers of the same checkpoint store: FollowCheckpoint makes this
worker follow another worker's run, GetInfo reports the served checkpoint version, WeightsDigest fingerprints
the served weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.lora.adapter import AdapterChanging
from inlaid_worker.server.engine_loop import EngineLoop
from inlaid_worker.server.servicer import AdapterLoader, WorkerServicer

from .digest import weights_digest
from .distribute import Distributor
from .job import Progress, RequantizeJob
from .manager import AddRequest, OnboardManager, RequantizeBusy

_STAGE = {"planned": worker_pb2.RequantizeProgress.STAGE_PLANNED, "layer": worker_pb2.RequantizeProgress.STAGE_LAYER,
          "done": worker_pb2.RequantizeProgress.STAGE_DONE, "failed": worker_pb2.RequantizeProgress.STAGE_FAILED}


def progress_to_proto(p: Progress) -> Any:
    return worker_pb2.RequantizeProgress(
        stage=_STAGE[p.stage], layer=p.layer, num_layers=p.num_layers, hessian_seconds=p.hessian_seconds,
        swap_seconds=p.swap_seconds, checkpoint_version=p.checkpoint_version, tasks=list(p.tasks),
        message=p.message, added=list(p.added), removed=list(p.removed),
    )


class OnboardingServicer(WorkerServicer):
    def __init__(
        self, loop: EngineLoop, load_adapter: AdapterLoader, adapter_error: type[Exception], worker_id: str,
        manager: OnboardManager | None, distributor: Distributor | None = None,
    ) -> None:
        super().__init__(loop, load_adapter, adapter_error, worker_id)
        self.manager = manager
        self.distributor = distributor

    def GetInfo(self, request: worker_pb2.InfoRequest, context: grpc.ServicerContext) -> Any:
        info = super().GetInfo(request, context)
        if self.distributor is not None:
            st = self.distributor.status()
            info.checkpoint.CopyFrom(worker_pb2.CheckpointStatus(
                version=st.version, store_id=st.store_id, quantizer_runs=st.quantizer_runs,
                quantizing=st.quantizing, following=st.following))
        return info

    def ValidateAdapter(self, request: worker_pb2.LoadAdapterRequest, context: grpc.ServicerContext) -> Any:
        try:
            adapter = self._load_adapter(request.path)
        except AdapterChanging as exc:  # being written: a retry may succeed (the gateway retries ABORTED)
            context.abort(grpc.StatusCode.ABORTED, f"adapter {request.name!r} not validated: {exc}")
        except self._adapter_error as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"adapter {request.name!r} refused: {exc}")
        # digest: of the bytes just read and validated (lora.digest), the gateway's reference for the task's job
        return common_pb2.ModelCard(id=request.name, parent=self.engine.adapters.base_model_id, rank=adapter.rank,
                                    target_modules=sorted(adapter.targets),
                                    max_model_len=self.engine.limits.max_model_len, digest=adapter.digest)

    def Requantize(self, request: worker_pb2.RequantizeRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        if self.manager is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this worker serves no quantized checkpoint with stored Hessians (start it with --checkpoint)")
        add = [AddRequest(t.name, t.adapter_path, t.calibration_path) for t in request.add]
        submit = self.distributor.submit if self.distributor is not None else self.manager.submit
        try:
            job = submit(add, list(request.remove))
        except RequantizeBusy as exc:
            context.abort(grpc.StatusCode.ABORTED, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        yield from _stream(job, context)

    def FollowCheckpoint(self, request: worker_pb2.FollowRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        if self.distributor is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this worker serves no quantized checkpoint with stored Hessians (start it with --checkpoint)")
        if not request.tasks:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tasks is empty")
        try:
            job = self.distributor.follow(list(request.tasks))
        except RequantizeBusy as exc:
            context.abort(grpc.StatusCode.ABORTED, str(exc))
        yield from _stream(job, context)

    def WeightsDigest(self, request: worker_pb2.DigestRequest, context: grpc.ServicerContext) -> Any:
        # DEADLINE_EXCEEDED past the lesser of ADAPTER_CALL_TIMEOUT_S and the client's deadline (it was UNKNOWN)
        digest, layers = self._on_engine_loop(
            context, lambda e: weights_digest(e.runner.weights.layers), "the weights digest", "it is still computed"
        )
        version = self.distributor.served_version if self.distributor is not None else 0
        return worker_pb2.DigestResponse(checkpoint_version=version, digest=digest, layers=layers)


def _stream(job: RequantizeJob, context: grpc.ServicerContext) -> Iterator[Any]:
    for event in job.follow():
        if not context.is_active():
            return
        yield progress_to_proto(event)
