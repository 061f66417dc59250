"""Writing and reading the GPTQ checkpoint directory (what transformers / GPTQModel / vLLM load).

  model.safetensors      model.layers.{i}.{self_attn|mlp}.{proj}.{qweight,qzeros,scales,g_idx[,bias]} plus
                         every non-quantized tensor (embeddings, norms, untied lm_head) in `dtype`
  config.json            the base config plus quantization_config
  quantize_config.json   the same quantization settings (GPTQModel / AutoGPTQ)
  tokenizer files, generation_config.json   copied from the base
  hessians/              see hessian_store.py (only for data-driven methods)
Written into a sibling temporary directory and renamed at the end: a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .pack import PackedLinear
from .spec import QuantSpec

_COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
           "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")
QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


def quantization_config(spec: QuantSpec, checkpoint_format: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "bits": spec.bits, "group_size": spec.group_size, "desc_act": spec.desc_act, "sym": spec.sym,
        "static_groups": spec.static_groups, "damp_percent": spec.percdamp, "true_sequential": False,
        "lm_head": False, "quant_method": "gptq", "checkpoint_format": checkpoint_format, "meta": meta,
    }


class CheckpointWriter:
    """Collect packed layers and plain tensors, then `finish()` (or leave the `with` block) to publish."""

    def __init__(self, out_dir: str | Path, base_dir: str | Path, qconfig: dict[str, Any], dtype: torch.dtype) -> None:
        self.out_dir, self.base_dir = Path(out_dir), Path(base_dir)
        if self.out_dir.exists():
            raise ValueError(f"output {self.out_dir} already exists; refusing to overwrite")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        self.qconfig, self.dtype = qconfig, dtype
        self.tensors: dict[str, torch.Tensor] = {}

    def add_layer(self, layer_idx: int, layer: nn.Module, packed: dict[str, PackedLinear]) -> None:
        for path, p in packed.items():
            prefix = f"model.layers.{layer_idx}.{path}"
            self.tensors.update({f"{prefix}.qweight": p.qweight, f"{prefix}.qzeros": p.qzeros,
                                 f"{prefix}.scales": p.scales, f"{prefix}.g_idx": p.g_idx})
            bias = layer.get_submodule(path).bias
            if bias is not None:
                self.tensors[f"{prefix}.bias"] = bias.detach().to("cpu", self.dtype)

    def add_unquantized(self, model: nn.Module, quantized_prefixes: set[str]) -> None:
        """Every state-dict tensor not belonging to a quantized linear (tied lm_head skipped)."""
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        for name, t in model.state_dict().items():
            if name.rsplit(".", 1)[0] in quantized_prefixes or (tied and name == "lm_head.weight"):
                continue
            self.tensors[name] = t.detach().to("cpu", self.dtype).contiguous()

    def finish(self) -> Path:
        save_file(self.tensors, str(self.tmp / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((self.base_dir / "config.json").read_text())
        config["quantization_config"] = self.qconfig
        dtype_name = str(self.dtype).removeprefix("torch.")
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = dtype_name
        (self.tmp / "config.json").write_text(json.dumps(config, indent=2))
        (self.tmp / "quantize_config.json").write_text(json.dumps(self.qconfig, indent=2))
        for name in _COPIED:
            if (self.base_dir / name).is_file():
                shutil.copy2(self.base_dir / name, self.tmp / name)
        _make_readable(self.tmp)
        os.replace(self.tmp, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is not None or self.tmp.exists():
            self.abort()


def _make_readable(root: Path) -> None:
    """mkdtemp makes the directory 0700 and safetensors writes 0600: a reader running as another user (a
    vLLM container, a serving account) could not open the checkpoint. Directories 0755, files 0644."""
    for p in (root, *root.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)


def read_quantization_config(ckpt_dir: str | Path) -> dict[str, Any]:
    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "gptq":
        raise ValueError(f"{ckpt_dir} is not a GPTQ checkpoint (no quantization_config with quant_method gptq)")
    return qc


def read_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, PackedLinear], dict[str, torch.Tensor]]:
    """({module prefix: packed linear}, {other tensor name: tensor}) from a checkpoint directory."""
    qc = read_quantization_config(ckpt_dir)
    bits, fmt = int(qc["bits"]), str(qc.get("checkpoint_format", "gptq"))
    with safe_open(str(Path(ckpt_dir) / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    prefixes = {k.rsplit(".", 1)[0] for k in tensors if k.endswith(".qweight")}
    packed = {
        p: PackedLinear(tensors.pop(f"{p}.qweight"), tensors.pop(f"{p}.qzeros"), tensors.pop(f"{p}.scales"),
                        tensors.pop(f"{p}.g_idx"), bits, fmt)
        for p in sorted(prefixes)
    }
    return packed, tensors
