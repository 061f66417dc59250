"""PEFT LoRA adapters: adapter_config.json + adapter_model.safetensors read, validated, refused clearly.

Supported: plain LoRA on any subset of q/k/v/o/gate/up/down_proj, one rank, `lora_alpha` scaling
(alpha / r, or alpha / sqrt(r) with use_rslora), optional `layers_to_transform` as a list of layer indices.
Refused with `AdapterError`: pickle weights, DoRA, biases, modules_to_save, rank/alpha patterns, regex
target_modules, other PEFT types, a weights file that is not safetensors (a renamed pickle, garbage, truncated),
a config that is not UTF-8 JSON (or larger than MAX_CONFIG_BYTES), a lora_alpha that is not a finite number > 0, a
use_rslora that is not a bool, a config or weights file that is a symlink resolving outside the adapter directory
(e.g. to /etc/...; a link to a file inside it is read, by its resolved path: a link re-pointed after the check is
not followed; in a Hugging Face hub cache snapshot, `<repo>/snapshots/<rev>`, a link to a regular file directly in
`<repo>/blobs` is read too, as the hub writes them), tensors that are not float16/bfloat16/float32, two tensors
naming the same module's lora_A or lora_B (`...lora_A.weight` and `...lora_A.default.weight`: one would silently
override the other), any tensor whose name or shape does not fit the base model, any tensor
holding NaN or infinite values (named in the error; without this check such an adapter is served and only fails
at re-quantization, as a Hessian that is not positive definite), and, by lora.magnitude's rule, any tensor or
module delta (scaling * B @ A) that float16 cannot hold (above 65504 in magnitude; the error names the tensors).

Each file is read once, whole, and parsed from those bytes (the weights by safetensors' own parser, never pickle);
the adapter's `digest` (lora.digest) is taken over the same bytes, so it names exactly what was validated and served.
The weights file's bytes are dropped once hashed and parsed, before the tensors are paired and converted (they would
otherwise add the file's size to the load's peak memory). The two files are read one after the other, so a rewrite of
the directory meanwhile could pair one version's config with another's weights, or catch a file half written. Each
file is checked like with like (device, inode, size, mtime and ctime in ns): its path stat'ed before it is opened and
again once both files are read (a file replaced by a rename, or written since), and its open file fstat'ed at the
open and after the read, whose byte count must be the size at the open (a file written in place during the read).
(An fstat is never compared with a stat of the path: on some overlay filesystems they disagree, and every read would
look changed.) A change reads both files again, once, and a second change refuses the adapter (AdapterChanging, an
AdapterError that the worker answers ABORTED: retry once the files are written). A file that fails to parse (the
config's JSON, its fields, the safetensors) while a file read so far changed counts as a change (caught mid-write,
not malformed); one that fails with no change seen is refused as malformed (INVALID_ARGUMENT). Not seen: a writer
between its two files for the whole read (one file already the new version when it is stat'ed, the other not yet
written once both are read), a writer stalled mid-file for the whole read (the half file is refused as malformed), a
rewrite in place that keeps the size within one tick of the file timestamps (the kernel's clock for them is coarse, a
few ms), and a version switched by re-pointing symlinks (the files read are those resolved and checked). The safe way to publish a new version is a new path (a directory of its own, never rewritten): a
directory cannot be renamed over a non-empty one, and renaming the two files into place one by one leaves a moment
with one file of each version.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from inlaid_worker.lora.digest import adapter_digest
from inlaid_worker.lora.magnitude import delta_problem, tensor_problem
from inlaid_worker.model.config import ModelConfig

SUPPORTED_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$"
)
_GROUP = {
    m: ("self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp") for m in SUPPORTED_MODULES
}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json (PEFT writes about 1 KiB)
# adapter_model.safetensors: refused above this size (its size at open, before any read: the whole file is read into
# memory); a LoRA of a 70B model at rank 64 on every projection is about 1.7 GiB in bf16
MAX_WEIGHTS_BYTES = 8 << 30
_CONFIG = "adapter_config.json"
_WEIGHTS = "adapter_model.safetensors"
_READS = 2  # reads of the two files before a rewrite seen between them refuses the adapter (load_adapter)
_T = TypeVar("_T")
# Config keys that must be falsy (None / False / empty) because they change what the adapter computes.
_UNSUPPORTED_KEYS = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA bias",
    "modules_to_save": "modules_to_save",
    "rank_pattern": "rank_pattern",
    "alpha_pattern": "alpha_pattern",
    "layer_replication": "layer_replication",
    "trainable_token_indices": "trainable_token_indices",
    "target_parameters": "target_parameters",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "use_qalora": "QA-LoRA",
    "fan_in_fan_out": "fan_in_fan_out",
    "megatron_config": "megatron_config",
}


class AdapterError(ValueError):
    """An adapter that cannot be served on this base model, with the reason."""


class AdapterChanging(AdapterError):
    """The adapter's files changed while they were read, on every read tried: being written, not bad (a retry may
    succeed; the worker answers ABORTED, not INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class LoraAdapter:
    rank: int
    alpha: float
    scale: float  # alpha / r, or alpha / sqrt(r) with rslora
    targets: frozenset[str]
    base_model_name_or_path: str | None
    # (layer, module) -> (A [rank, in_features], B [out_features, rank]), float32 on the CPU
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
    # sha256 of the bytes read (lora.digest: WorkerInfo.adapter_digests); "" for an adapter not read from files
    digest: str = ""


def load_adapter(path: str | Path, base: ModelConfig, *, expected_base: str | None = None) -> LoraAdapter:
    """Load and validate the adapter directory at `path` against the base model's config.

    If `expected_base` is given, the adapter's base_model_name_or_path must end in the same name
    (compared on the last path component, case-insensitively: training and serving paths differ).
    """
    root = Path(path)
    if not root.is_dir():
        raise AdapterError(f"adapter directory {root} does not exist")

    def parse(raw: dict[str, Any]) -> tuple[int, float, bool, frozenset[str], tuple[int, ...], str | None]:
        rank, alpha, rslora = _rank_alpha(raw)
        targets = _targets(raw)
        layers = _layers(raw, base)
        base_name = raw.get("base_model_name_or_path")
        if expected_base is not None and base_name and _tail(base_name) != _tail(expected_base):
            raise AdapterError(f"adapter was trained on {base_name!r}, this worker serves {expected_base!r}")
        return rank, alpha, rslora, targets, layers, base_name

    (rank, alpha, rslora, targets, layers, base_name), config_bytes, tensors, weights_bytes = _read_files(root, parse)
    # the digest is over the bytes parsed; then those bytes (the file's size) go before the tensors are paired
    digest = adapter_digest({_CONFIG: config_bytes, _WEIGHTS: weights_bytes})
    del weights_bytes
    scale = alpha / math.sqrt(rank) if rslora else alpha / rank
    weights = _pair_tensors(tensors, base, rank, targets, layers, scale)
    return LoraAdapter(rank, alpha, scale, targets, base_name, weights, digest)


def _read_files(root: Path, parse: Callable[[dict[str, Any]], _T]) -> tuple[_T, bytes, dict[str, torch.Tensor], bytes]:
    """(parse(the config), the config's bytes, the tensors, the weights' bytes), the config checked by `parse` before
    the weights are read; both files read again (once) if a file read changed (_changed), also when a file failed to
    parse (a file caught mid-write): then the parse's AdapterError is raised only if no file read changed."""
    failed: AdapterError | None = None
    for _ in range(_READS):
        opened: list[_Opened] = []
        try:
            raw, config_bytes = _read_config(root, opened)
            parsed = parse(raw)
            tensors, weights_bytes = _read_tensors(root, opened)
        except AdapterError as exc:
            if not any(_changed(o) for o in opened):
                raise  # malformed, not being written
            failed = exc  # a file caught mid-write: read again
            continue
        if not any(_changed(o) for o in opened):
            return parsed, config_bytes, tensors, weights_bytes
        failed = None
        del tensors, weights_bytes  # perhaps another version's files than the config's: both are read again
    last = "" if failed is None else f"; the last read failed: {failed}"
    raise AdapterChanging(
        f"the adapter files in {root} ({_CONFIG}, {_WEIGHTS}) changed while they were read, {_READS} times in a row; "
        f"retry once they are written (give each version a path of its own){last}"
    )


@dataclass(frozen=True)
class _Opened:
    """A file read: the path opened (a symlink's resolution: _contained), its stamp (_stamp) from a stat of that path
    before the open, and whether the open file changed during the read (fstat at the open and after the read differ,
    or the bytes read are not the size at the open)."""

    path: Path
    before: tuple[int, ...]
    torn: bool


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What tells a file rewritten in place or replaced by a rename: device, inode, size, mtime and ctime (ns)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _changed(opened: _Opened) -> bool:
    """Whether the file changed during its read, or its path no longer stats as before the open (or cannot be)."""
    if opened.torn:
        return True
    try:
        return _stamp(os.stat(opened.path)) != opened.before
    except OSError:
        return True


def _read_file(file: Path, real: Path, opened: list[_Opened], limit: int = -1, max_size: int | None = None) -> bytes:
    """The bytes of `real` (`file` resolved: _contained), at most `limit` (-1: all); the read appended to `opened`.
    A file larger than `max_size` at open is refused before it is read (AdapterError)."""
    try:
        before = _stamp(os.stat(real))
        with real.open("rb") as f:
            at_open = os.fstat(f.fileno())
            if max_size is not None and at_open.st_size > max_size:
                raise AdapterError(
                    f"{file} is {at_open.st_size} bytes, over the {max_size}-byte limit on adapter weights"
                )
            data = f.read(limit)
            after = os.fstat(f.fileno())
    except OSError as exc:
        raise AdapterError(f"{file} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    size = at_open.st_size if limit < 0 else min(at_open.st_size, limit)
    opened.append(_Opened(real, before, _stamp(after) != _stamp(at_open) or len(data) != size))
    return data


def _tail(name: str) -> str:
    return name.rstrip("/").split("/")[-1].lower()


def _hub_blobs(real_root: Path) -> Path | None:
    """`<repo>/blobs` when the (resolved) adapter directory is a Hugging Face hub cache snapshot or a folder in one
    (`<repo>/snapshots/<rev>` or `<repo>/snapshots/<rev>/<sub>/...`, the layout of a repo holding several adapters)
    next to a `<repo>/blobs` directory that is not itself a symlink; else None. The nearest such ancestor with a real
    `blobs` decides (a repo may itself hold a folder named `snapshots`: the walk goes on above it)."""
    for p in (real_root, *real_root.parents):
        if p.parent == p:  # the filesystem root
            return None
        if p.parent.name == "snapshots":
            blobs = p.parent.parent / "blobs"
            if blobs.is_dir() and not blobs.is_symlink():
                return blobs
    return None


def _contained(root: Path, file: Path) -> Path:
    """`file` (a path in the adapter directory `root`) resolved through its symlinks: the path to open (opening `file`
    itself would follow its links again, which may have changed since this check). Refused when it resolves outside
    `root`, except in a Hugging Face hub cache snapshot (`root` is `<repo>/snapshots/<rev>` or a folder in it, see
    _hub_blobs), whose files link to `../../blobs/<sha>` (`../../../blobs/<sha>` from a subfolder): there a link
    resolving to a regular file directly in `<repo>/blobs` is read."""
    try:
        real, real_root = file.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling link or a loop
        raise AdapterError(f"{file} cannot be resolved ({type(exc).__name__}: {str(exc)[:200]})") from None
    if real.is_relative_to(real_root):
        return real
    blobs = _hub_blobs(real_root)
    if blobs is not None and real.parent == blobs and real.is_file():
        return real
    where = f"the adapter directory {real_root}" + ("" if blobs is None else f" and the hub cache's {blobs}")
    raise AdapterError(
        f"{file} is a symlink to {real}, outside {where}; an adapter's files must lie inside its directory "
        "(or, in a Hugging Face cache snapshot, in the cache's blobs directory)"
    )


def _read_config(root: Path, opened: list[_Opened]) -> tuple[dict[str, Any], bytes]:
    """The config and the bytes it was parsed from; the file read appended to `opened` before it is parsed."""
    cfg = root / _CONFIG
    if not cfg.is_file():
        raise AdapterError(f"{cfg} not found")
    text = _read_file(cfg, _contained(root, cfg), opened, MAX_CONFIG_BYTES + 1)
    if len(text) > MAX_CONFIG_BYTES:
        raise AdapterError(f"{cfg} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise AdapterError(f"{cfg} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{cfg} must hold a JSON object")
    peft_type = raw.get("peft_type", "LORA")
    if not isinstance(peft_type, str) or peft_type != "LORA":
        raise AdapterError(f"peft_type {peft_type!r} is not supported (only LORA)")
    if raw.get("bias", "none") != "none":
        raise AdapterError(f"bias={raw['bias']!r} is not supported (only 'none')")
    for key, what in _UNSUPPORTED_KEYS.items():
        if raw.get(key):
            raise AdapterError(f"{what} is not supported ({key}={raw[key]!r})")
    return raw, text


def _rank_alpha(raw: dict[str, Any]) -> tuple[int, float, bool]:
    rank = raw.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise AdapterError(f"r must be a positive integer, got {rank!r}")
    alpha = raw.get("lora_alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise AdapterError(f"lora_alpha must be a number, got {alpha!r}")
    try:
        alpha = float(alpha)
    except OverflowError:  # an int too large for a float
        alpha = math.inf
    if not math.isfinite(alpha) or alpha <= 0:  # 0 serves the base model; < 0 subtracts the delta
        raise AdapterError(f"lora_alpha must be a finite number > 0, got {str(raw.get('lora_alpha'))[:40]}")
    rslora = raw.get("use_rslora", False)
    if rslora is None:
        rslora = False
    if not isinstance(rslora, bool):
        raise AdapterError(f"use_rslora must be true or false, got {rslora!r}")
    return rank, alpha, rslora


def _targets(raw: dict[str, Any]) -> frozenset[str]:
    targets = raw.get("target_modules")
    if targets == "all-linear":
        return frozenset(SUPPORTED_MODULES)
    if isinstance(targets, str):
        if targets not in SUPPORTED_MODULES:
            raise AdapterError(
                f"target_modules as a regex ({targets!r}) is not supported; give a list of names"
            )
        targets = [targets]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise AdapterError(f"target_modules must be a non-empty list of names, got {targets!r}")
    unknown = sorted(set(targets) - set(SUPPORTED_MODULES))
    if unknown:
        raise AdapterError(f"unsupported target module(s) {unknown}; supported: {list(SUPPORTED_MODULES)}")
    return frozenset(targets)


def _layers(raw: dict[str, Any], base: ModelConfig) -> tuple[int, ...]:
    spec = raw.get("layers_to_transform")
    if spec is None:
        return tuple(range(base.num_layers))
    if raw.get("layers_pattern") not in (None, "layers", ["layers"]):
        raise AdapterError(f"layers_pattern {raw['layers_pattern']!r} is not supported")
    layers = [spec] if isinstance(spec, int) else spec
    if not isinstance(layers, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < base.num_layers for i in layers
    ):
        raise AdapterError(f"layers_to_transform {spec!r} must list layer indices in [0, {base.num_layers})")
    return tuple(sorted(set(layers)))


def _read_tensors(root: Path, opened: list[_Opened]) -> tuple[dict[str, torch.Tensor], bytes]:
    """The tensors and the bytes they were parsed from (read once: the digest is over what was parsed); the file read
    appended to `opened` before it is parsed."""
    file = root / _WEIGHTS
    if not file.is_file():
        pickled = [p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        if pickled:
            raise AdapterError(
                f"{root} holds pickle weights ({', '.join(sorted(pickled))}); only adapter_model.safetensors "
                "is loaded (pickle can run code); re-save with save_pretrained(safe_serialization=True)"
            )
        raise AdapterError(f"{file} not found")
    data = _read_file(file, _contained(root, file), opened, max_size=MAX_WEIGHTS_BYTES)
    try:
        # each tensor in a writable buffer of its own (safetensors' deserialize copies it out of `data`); by name, as
        # safe_open lists them (the first misfit tensor named in an error does not depend on the file's layout)
        tensors = dict(sorted(load_safetensors(data).items()))
    except (SafetensorError, ValueError, RuntimeError, KeyError) as exc:  # pickle renamed, garbage, truncated
        raise AdapterError(f"{file} is not a safetensors file ({type(exc).__name__}: {str(exc)[:200]})") from None
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise AdapterError(
                f"tensor {name!r} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                "LoRA weights must be float16, bfloat16 or float32"
            )
    return tensors, data


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor holding NaN or +-inf (checked in its stored dtype, before any conversion)."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    bad = tensor[~finite]
    nan, inf = int(torch.isnan(bad).sum()), int(torch.isinf(bad).sum())
    raise AdapterError(
        f"tensor {name!r} holds non-finite values ({nan} NaN, {inf} infinite of {tensor.numel()}); "
        "LoRA weights must be finite"
    )


def _pair_tensors(
    tensors: dict[str, torch.Tensor],
    base: ModelConfig,
    rank: int,
    targets: frozenset[str],
    layers: tuple[int, ...],
    scale: float,
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    found: dict[tuple[int, str, str], tuple[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = _KEY.match(name)
        if match is None:
            raise AdapterError(
                f"unexpected tensor {name!r} (only lora_A/lora_B of decoder projections are served)"
            )
        layer, group, module, which = int(match[1]), match[2], match[3], match[4]
        if module not in targets or _GROUP[module] != group:
            raise AdapterError(f"tensor {name!r} is for a module not in target_modules {sorted(targets)}")
        if layer not in layers:
            raise AdapterError(
                f"tensor {name!r}: layer {layer} is outside the base model's transformed layers"
            )
        out_f, in_f = base.linear_shape(module)
        expected = (rank, in_f) if which == "A" else (out_f, rank)
        if tuple(tensor.shape) != expected:
            raise AdapterError(
                f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {expected} "
                f"(r={rank}, base {module} is {out_f}x{in_f})"
            )
        seen = found.get((layer, module, which))
        if seen is not None:  # "...lora_A.weight" and "...lora_A.default.weight": one would override the other
            raise AdapterError(
                f"tensors {seen[0]!r} and {name!r} are both lora_{which} of layer {layer} {module}; keep one"
            )
        _check_finite(name, tensor)
        _raise_if(tensor_problem(name, tensor))
        found[(layer, module, which)] = (name, tensor.to(torch.float32))
    weights = {}
    for layer in layers:
        for module in sorted(targets):
            named_a, named_b = found.get((layer, module, "A")), found.get((layer, module, "B"))
            if named_a is None or named_b is None:
                missing = "lora_A" if named_a is None else "lora_B"
                raise AdapterError(f"missing {missing} for layer {layer} {module}")
            (name_a, a), (name_b, b) = named_a, named_b
            _raise_if(delta_problem(name_a, name_b, a, b, scale))
            weights[(layer, module)] = (a, b)
    return weights


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise AdapterError(problem)
