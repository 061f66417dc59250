"""An adapter's content digest (WorkerInfo.adapter_digests, ModelCard.digest): sha256 over the bytes the loader read
and parsed, never a second read of the files (a file rewritten in between would give a digest of other bytes than
those served). Each file is framed by its name and its length, in name order (adapter_config.json, then
adapter_model.safetensors), under a version tag: two adapters get the same digest exactly when both files hold the
same bytes, whatever their directory, modification time or other files beside them. The gateway compares it with the
digest its job's load step recorded, to find an adapter rewritten in place at the same path."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

_TAG = b"inlaid-adapter-digest-v1\0"


def adapter_digest(files: Mapping[str, bytes]) -> str:
    """sha256 (64 lowercase hex) of file name -> the bytes read from it."""
    h = hashlib.sha256(_TAG)
    for name in sorted(files):
        data = files[name]
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()
