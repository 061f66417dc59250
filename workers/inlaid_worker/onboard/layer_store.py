"""The shared layer store: how one worker's re-quantization reaches the other workers that share its
checkpoint store (a directory every worker of the group can read, e.g. a shared volume).

While the quantizer runs version N it writes `<store>/v000N.staging/`:

  manifest.json            what is being built (version, run id, owner, task set, packing, the fingerprint of
                           the run's inputs: run_inputs.py) and the finished layers with the sha256 of their
                           files; status running | done | failed
  layer-0000-<run>.safetensors   one finished layer's seven packed linears (`self_attn.q_proj.qweight`, ...),
                           named after the run that quantized it (a file is never rewritten under a name a
                           reader may have taken from a manifest)
  lease                    touched by the owner every LEASE_BEAT_S; a lease older than LEASE_S means the owner
                           process is gone

and `<store>/staging.json` points at the staging directory of the run in progress. Every file is written to a
temporary name and renamed, so a reader sees either the old or the new file, never a torn one; a layer is listed
in the manifest only after its file is in place. Only the owner writes; followers only read. The published
version itself stays what versions.py publishes (`v000N/` + `current.json`).

Resuming: a new owner of version N (the previous one died, or its run failed) keeps every staged layer whose
manifest was made from the same inputs (same base version, task set, quant packing and input fingerprint) and
whose file still has its listed sha256 (`reusable`); its first manifest already lists them (`resumed_from`,
`reused`), under the same file names, so a follower that swapped them in sees the same sha256 and keeps them,
and the quantizer skips their GPTQ (`StagedLayers`, the `reuse` of quant.layerwise). A writer whose run was
taken over (another run id in manifest.json) stops: it writes nothing more and stops renewing the lease.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from inlaid_worker.quant import PackedLinear

log = logging.getLogger(__name__)
Status = Literal["running", "done", "failed"]
LEASE_ENV = "INLAID_STAGING_LEASE_S"
LEASE_S = float(os.environ.get(LEASE_ENV, "15"))  # a lease not renewed for this long: the owner is gone
LEASE_BEAT_S = 1.0
_FIELDS = ("qweight", "qzeros", "scales", "g_idx")


@dataclass(frozen=True)
class LayerEntry:
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    version: int
    run_id: str
    owner: str
    base_version: int
    tasks: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    group_size: int
    sym: bool
    status: Status = "running"
    message: str = ""
    num_layers: int = 0
    layers: dict[int, LayerEntry] = field(default_factory=dict)
    inputs: str = ""  # run_inputs.py fingerprint; "" (an older writer) is never resumed
    resumed_from: str = ""  # run id whose staged layers this run took over
    reused: tuple[int, ...] = ()  # the layers taken over from it (no GPTQ ran for them in this run)

    def same_run_inputs(self, other: Manifest) -> bool:
        """Both runs build the same version from the same inputs, so their layers are interchangeable."""
        return bool(self.inputs) and (self.version, self.base_version, self.tasks, self.added, self.removed,
                                      self.group_size, self.sym, self.inputs) == (
            other.version, other.base_version, other.tasks, other.added, other.removed, other.group_size,
            other.sym, other.inputs)

    def to_json(self) -> str:
        raw = asdict(self)
        raw["layers"] = {str(i): asdict(e) for i, e in sorted(self.layers.items())}
        return json.dumps(raw, indent=1)

    @staticmethod
    def from_json(text: str) -> Manifest:
        raw = json.loads(text)
        layers = {int(i): LayerEntry(**e) for i, e in raw.pop("layers").items()}
        for key in ("tasks", "added", "removed", "reused"):
            raw[key] = tuple(raw.get(key, ()))
        return Manifest(**raw, layers=layers)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary sibling and rename it over `path` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pack_layer(packed: Mapping[str, PackedLinear]) -> bytes:
    """A layer's packed linears as safetensors bytes (bits and format in the metadata, one value per layer)."""
    first = next(iter(packed.values()))
    tensors = {f"{p}.{k}": getattr(lin, k).contiguous() for p, lin in sorted(packed.items()) for k in _FIELDS}
    return save_safetensors(tensors, metadata={"bits": str(first.bits), "format": first.checkpoint_format})


def unpack_layer(data: bytes) -> dict[str, PackedLinear]:
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8: 8 + header_len]).get("__metadata__", {})
    tensors: dict[str, torch.Tensor] = load_safetensors(data)
    paths = sorted({k.rsplit(".", 1)[0] for k in tensors})
    bits, fmt = int(meta["bits"]), str(meta["format"])
    return {p: PackedLinear(tensors[f"{p}.qweight"], tensors[f"{p}.qzeros"], tensors[f"{p}.scales"],
                            tensors[f"{p}.g_idx"], bits, fmt) for p in paths}


class LayerStore:
    """Staging directories of re-quantization runs under one checkpoint store."""

    def __init__(self, store: str | Path) -> None:
        self.root = Path(store)

    # ---- identity ---------------------------------------------------------------------------------------
    def store_id(self) -> str:
        """A random id created once per store (link(2) does not overwrite, so concurrent starters agree):
        workers reporting the same id share this store, hence one quantizer."""
        path = self.root / "store.json"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".store.{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps({"id": uuid.uuid4().hex}))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return str(json.loads(path.read_text())["id"])

    # ---- the run in progress ------------------------------------------------------------------------------
    def staging_dir(self, version: int) -> Path:
        return self.root / f"v{version:04d}.staging"

    def active(self) -> Manifest | None:
        """The manifest of the latest run (in progress or ended), or None."""
        pointer = self.root / "staging.json"
        if not pointer.is_file():
            return None
        version = int(json.loads(pointer.read_text())["version"])
        return self.manifest(version)

    def manifest(self, version: int) -> Manifest | None:
        path = self.staging_dir(version) / "manifest.json"
        return Manifest.from_json(path.read_text()) if path.is_file() else None

    def lease_age(self, version: int) -> float:
        """Seconds since the owner of `version`'s run last renewed its lease (inf without a lease)."""
        try:
            return max(0.0, time.time() - (self.staging_dir(version) / "lease").stat().st_mtime)
        except FileNotFoundError:
            return float("inf")

    def read_layer(self, m: Manifest, layer: int) -> dict[str, PackedLinear]:
        return read_staged(self.staging_dir(m.version), layer, m.layers[layer])

    def reusable(self, want: Manifest) -> dict[int, LayerEntry]:
        """The layers already staged for `want`'s version by an earlier run with the same inputs, each checked
        against its sha256 (a missing or altered file is left out and quantized again)."""
        old = self.manifest(want.version)
        if old is None or old.run_id == want.run_id or not want.same_run_inputs(old):
            return {}
        out: dict[int, LayerEntry] = {}
        for i, entry in sorted(old.layers.items()):
            try:
                staged_bytes(self.staging_dir(want.version), i, entry)
            except (OSError, ValueError) as exc:
                log.warning("staged layer %d of v%d not reused: %s", i, want.version, exc)
                continue
            out[i] = entry
        return out


def staged_bytes(directory: Path, layer: int, entry: LayerEntry) -> bytes:
    """A staged layer's file; ValueError when its bytes do not have the manifest's sha256."""
    data = (directory / entry.file).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != entry.sha256:
        raise ValueError(f"staged layer {layer} in {directory.name} is corrupt (sha256 {got[:12]} != {entry.sha256[:12]})")
    return data


def read_staged(directory: Path, layer: int, entry: LayerEntry) -> dict[str, PackedLinear]:
    """A staged layer's packed linears, checked against the manifest's sha256."""
    return unpack_layer(staged_bytes(directory, layer, entry))


@dataclass(frozen=True)
class StagedLayers:
    """quant.layerwise's `reuse` for a resumed run: a kept layer's packed weights, re-checked against its sha256
    when read (None: quantize it). Plain data, so it pickles into the quantizer process."""

    directory: Path
    entries: tuple[tuple[int, LayerEntry], ...]

    def __call__(self, layer: int) -> dict[str, PackedLinear] | None:
        entry = dict(self.entries).get(layer)
        if entry is None:
            return None
        try:
            return read_staged(self.directory, layer, entry)
        except (OSError, ValueError) as exc:
            log.warning("staged layer %d changed since it was checked (%s); quantizing it", layer, exc)
            return None


class RunTakenOver(RuntimeError):
    """Another owner took this worker's run over (it was presumed dead): this writer must stop."""


class StagingWriter:
    """The owner's side of one run: begin() (staging dir, pointer, lease), add_layer(), end(). The manifest
    given to the constructor may already list layers taken over from an earlier run (`reused`): begin() keeps
    their files and removes every other file of the directory."""

    def __init__(self, store: LayerStore, manifest: Manifest) -> None:
        self.store, self.manifest = store, manifest
        self.dir = store.staging_dir(manifest.version)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def begin(self) -> None:
        # the new manifest replaces the old one in one rename (a follower never finds the directory without one),
        # then what it does not list goes (an earlier run's layers that are not reused, leftover temporaries)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lease").touch()
        self._write_manifest()
        keep = {"manifest.json", "lease"} | {e.file for e in self.manifest.layers.values()}
        for p in self.dir.iterdir():
            if p.name in keep:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        write_atomic(self.store.root / "staging.json", json.dumps({"version": self.manifest.version}).encode())
        self._beat = threading.Thread(target=self._renew, name="staging-lease", daemon=True)
        self._beat.start()
        self._prune()

    def add_layer(self, layer: int, num_layers: int, packed: Mapping[str, PackedLinear], *, reused: bool = False) -> str:
        """Stage one finished layer (file first, then the manifest); returns its sha256. A layer taken over
        from the earlier run (`reused`: the quantizer used its staged weights) is only recorded: its file is
        already listed."""
        self._check_owner()
        if reused and layer in self.manifest.reused:
            self.manifest = replace(self.manifest, num_layers=num_layers)
            self._write_manifest()
            return self.manifest.layers[layer].sha256
        data = pack_layer(packed)
        name = f"layer-{layer:04d}-{self.manifest.run_id[:8]}.safetensors"
        write_atomic(self.dir / name, data)
        sha = hashlib.sha256(data).hexdigest()
        layers = {**self.manifest.layers, layer: LayerEntry(name, sha)}
        self.manifest = replace(self.manifest, num_layers=num_layers, layers=layers,
                                reused=tuple(i for i in self.manifest.reused if i != layer))
        self._write_manifest()
        return sha

    def end(self, status: Status, message: str = "") -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        if not self.owns():
            log.warning("v%d: run %s was taken over; not marking it %s", self.manifest.version,
                        self.manifest.run_id, status)
            return
        self.manifest = replace(self.manifest, status=status, message=message)
        self._write_manifest()

    def owns(self) -> bool:
        """The manifest on disk is still this run's (no other owner took the version over)."""
        current = self.store.manifest(self.manifest.version)
        return current is not None and current.run_id == self.manifest.run_id

    def _check_owner(self) -> None:
        if not self.owns():
            current = self.store.manifest(self.manifest.version)
            raise RunTakenOver(f"the re-quantization of v{self.manifest.version} was taken over by "
                               f"{current.owner if current is not None else 'another worker'}")

    def _write_manifest(self) -> None:
        write_atomic(self.dir / "manifest.json", self.manifest.to_json().encode())

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_BEAT_S):
            try:
                if not self.owns():
                    return  # never keep another owner's run looking alive
                os.utime(self.dir / "lease")
            except (OSError, ValueError):
                return

    def _prune(self) -> None:
        """Keep the staging directories of this run and the one before it (a late follower may read it)."""
        for d in self.store.root.glob("v*.staging"):
            try:
                n = int(d.name[1:].split(".")[0])
            except ValueError:
                continue
            if n < self.manifest.version - 1:
                shutil.rmtree(d, ignore_errors=True)
