"""Dynamic task addition on the worker: serve a GPTQ checkpoint, re-quantize it for added/removed tasks in a
background thread (incremental MLGPTQ), and swap each finished layer into the serving model between steps."""

from .checkpoint_weights import layer_from_packed
from .manager import OnboardManager, RequantizeBusy
from .versions import CheckpointVersions

__all__ = ["CheckpointVersions", "OnboardManager", "RequantizeBusy", "layer_from_packed"]
