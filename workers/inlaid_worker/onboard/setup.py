"""Wiring of the onboarding pieces into the worker (called from server/app.py): serve the latest published
checkpoint version, and build the servicer with the onboarding RPCs."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

from inlaid_worker.config import WorkerConfig
from inlaid_worker.server.engine_loop import EngineLoop

from .distribute import Distributor
from .manager import OnboardManager, install_checkpoint
from .servicer import OnboardingServicer
from .versions import CheckpointVersions

log = logging.getLogger(__name__)
# runner -> the version serve_checkpoint installed: what the worker serves, even if the store moves on before
# the servicer is built (the distributor must not claim a version it has not loaded)
_INSTALLED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def versions_of(cfg: WorkerConfig) -> CheckpointVersions:
    if cfg.checkpoint is None:
        raise ValueError("no --checkpoint configured")
    return CheckpointVersions(cfg.checkpoint, cfg.checkpoint_store)


def serve_checkpoint(cfg: WorkerConfig, engine: Any) -> None:
    current = versions_of(cfg).current()
    install_checkpoint(engine.runner, current.path)
    _INSTALLED[engine.runner] = current.number
    log.info("serving quantized checkpoint v%d at %s", current.number, current.path)


def onboarding_servicer(
    cfg: WorkerConfig, loop: EngineLoop, load_adapter: Any, adapter_error: type[Exception], model_dir: Path
) -> OnboardingServicer:
    manager = distributor = None
    if cfg.checkpoint:
        engine = loop.engine
        manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), model_dir, engine.tokenizer.hf,
                                 device=cfg.device, quantizer_start=cfg.quantizer_start)
        distributor = Distributor(manager, cfg.worker_id,  # one quantizer per checkpoint store (distribute.py)
                                  served_version=_INSTALLED.get(engine.runner))
    return OnboardingServicer(loop, load_adapter, adapter_error, cfg.worker_id, manager, distributor)
