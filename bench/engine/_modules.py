"""Load a Python file as a module under a given name (a before/after copy of a source file, e.g. HEAD's from
`git show HEAD:workers/inlaid_worker/engine/device_sampler.py > /tmp/a.py`): bench/engine's shared loader."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def load_module(name: str, path: str) -> ModuleType:
    """The file at `path` run as module `name` (registered in sys.modules first, as an import would)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
