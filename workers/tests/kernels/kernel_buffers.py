"""The split-K workspace tables (quant_common._WORKSPACES, quant_tcw._SLOT_WS) emptied for one device inside a block,
then restored: a test that checks which buffer a launch gets starts from none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from inlaid_worker.kernels import quant_common, quant_tcw


@contextmanager
def fresh_workspaces(device: torch.device) -> Iterator[None]:
    tables = (quant_tcw._SLOT_WS, quant_common._WORKSPACES)
    saved = [table.pop(device, None) for table in tables]
    try:
        yield
    finally:
        for table, entry in zip(tables, saved, strict=True):
            table.pop(device, None)
            if entry is not None:
                table[device] = entry
