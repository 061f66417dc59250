"""Do third-party GPTQ readers load our checkpoints and compute the same model? (issue 3; not part of CI)

Two interpreters. The project venv quantizes (our quantizer) and computes our logits twice: with the
ModelRunner (torch backend) and with our dequantizer in a transformers model. A scratch venv, kept outside
the repository so the project venv never changes, holds the third-party readers (CPU only):

  python3 -m venv /tmp/interop-venv
  /tmp/interop-venv/bin/pip install torch==2.13.0 transformers==5.17.0 optimum==2.3.0 gptqmodel==7.5.0 requests

(gptqmodel >= 7.6 needs torch >= 2.14 and transformers >= 5.20; optimum 2.x needs gptqmodel >= 7; 7.5.0 is
pure Python, no CUDA build.) It loads each checkpoint with AutoModelForCausalLM.from_pretrained (transformers
-> optimum -> GPTQModel's kernel), with GPTQModel.load, and with an independent dequantizer written here from
the GPTQ v1/v2 convention (no inlaid code). Then every reader's logits are compared with ours.

  .venv/bin/python bench/quality/interop.py all --work /tmp/interop \
      --reader-python /tmp/interop-venv/bin/python --json bench/results/interop-2026-11-29.json
Steps alone: `quantize` and `compare` (project venv), `read` (scratch venv); `--cases a,b` limits the cases.
About 45 min of one CPU core for all 11 cases. Results: bench/results/interop-2026-11-29.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a prime number is."]
NEW_TOKENS = 16
# (name, model, bits, group, act_order, static_groups, sym). SmolLM2's K = 576 is not a multiple of 128, so
# the real model uses g64 (vLLM rejects K % group != 0); g128 runs on a random Llama whose K are multiples.
CASES = [
    ("smollm2-4b-g64", "smollm2", 4, 64, False, False, True),
    ("smollm2-4b-g64-actorder-static", "smollm2", 4, 64, True, True, True),
    ("smollm2-4b-g64-desc_act", "smollm2", 4, 64, True, False, True),
    ("smollm2-3b-g64", "smollm2", 3, 64, False, False, True),
    ("smollm2-3b-g64-actorder-static", "smollm2", 3, 64, True, True, True),
    ("smollm2-3b-g64-desc_act", "smollm2", 3, 64, True, False, True),
    ("smollm2-4b-g64-asym", "smollm2", 4, 64, False, False, False),
    ("rand-4b-g128", "rand", 4, 128, False, False, True),
    ("rand-4b-g128-desc_act", "rand", 4, 128, True, False, True),
    ("rand-3b-g128", "rand", 3, 128, False, False, True),
    ("rand-3b-g128-desc_act", "rand", 3, 128, True, False, True),
]


def make_random_llama(out: Path) -> Path:
    """A 2-layer Llama with K in {256, 768} (multiples of 128), peaky logits, SmolLM2's tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    from inlaid_worker.model.smollm2 import ensure_smollm2

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      initializer_range=0.08, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    base = ensure_smollm2()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((base / name).read_bytes())
    return out


def prompt_ids(model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]) for p in PROMPTS]


def runner_greedy(ckpt: Path, prompts: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    """Our serving path: prompt rows' logits, then NEW_TOKENS greedy steps (token and logits of each)."""
    sys.path.insert(0, str(ROOT / "workers" / "tests"))
    from factories import make_step
    from inlaid_worker.model.runner import ModelRunner

    runner = ModelRunner(ckpt, backend="torch", dtype=torch.float32, num_kv_blocks=16, block_size=16)
    table = list(range(16))
    out = []
    for ids in prompts:
        step = make_step([(ids, 0, table, -1)], 16)
        step = dataclasses.replace(step, logits_indices=torch.arange(len(ids)))  # every prompt row
        rows, seq, gen = [runner.execute(step).clone()], list(ids), []  # clones: a graph step's host logits are one
        # shared buffer's rows, overwritten by the next step (model.graph_logits; the torch backend returns fresh ones)
        for _ in range(NEW_TOKENS):
            tok = int(rows[-1][-1].argmax())
            gen.append(tok)
            seq.append(tok)
            if len(gen) < NEW_TOKENS:
                rows.append(runner.execute(make_step([([tok], len(seq) - 1, table, -1)], 16)).clone())
        out.append({"logits": torch.cat(rows), "tokens": torch.tensor(gen)})
    return out


def forced_logits(model: torch.nn.Module, prompts: list[list[int]], gens: list[list[int]]) -> list[torch.Tensor]:
    """Logits of every position of prompt + generated tokens (the last token's prediction left out)."""
    with torch.no_grad():
        return [model(input_ids=torch.tensor([p + g[:-1]])).logits[0].float() for p, g in zip(prompts, gens)]


def cmd_quantize(work: Path) -> None:
    from inlaid_worker.model.smollm2 import ensure_smollm2
    from inlaid_worker.quant import QuantSpec, load_dequantized_model, quantize_checkpoint
    from inlaid_worker.quant.calib import load_calibration
    from inlaid_worker.quant.quantize import TaskData
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    bases = {"smollm2": ensure_smollm2(), "rand": make_random_llama(work / "rand-base")}
    calib = work / "calib.jsonl"
    recs = [json.loads(line) for line in (ROOT / "assets/tasks/boolq/calib.jsonl").read_text().splitlines()[:8]]
    calib.write_text("".join(json.dumps({"text": r["prompt"]}) + "\n" for r in recs))
    prompts = prompt_ids(bases["smollm2"])
    (work / "prompts.json").write_text(json.dumps(prompts))
    for name, model, bits, group, act, static, sym in CASES:
        ckpt = work / name
        if not ckpt.exists():
            seqs = load_calibration(calib, AutoTokenizer.from_pretrained(str(bases[model])), 256, None, 0)
            spec = QuantSpec(bits=bits, group_size=group, act_order=act, static_groups=static, sym=sym)
            quantize_checkpoint(bases[model], ckpt, "gptq", spec, [TaskData("pool", None, seqs)])
        ours = runner_greedy(ckpt, prompts)
        gens = [o["tokens"].tolist() for o in ours]
        hf = forced_logits(load_dequantized_model(ckpt), prompts, gens)
        torch.save({"runner": ours, "dequant_hf": hf}, work / f"{name}.ours.pt")
        print(f"{name}: quantized, our logits saved", flush=True)


def independent_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """Dequantize from the files alone: GPTQ bit stream (value j of a column at bit j * bits, little-endian
    32-bit words), zeros + 1 for checkpoint_format gptq (v1), W[n, k] = s[g_idx[k], n] (q[k, n] - z[g_idx[k], n])."""
    from safetensors.torch import load_file

    qc = json.loads((ckpt / "quantize_config.json").read_text())
    bits, v1 = int(qc["bits"]), qc.get("checkpoint_format", "gptq") == "gptq"
    t = load_file(str(ckpt / "model.safetensors"))

    def unpack(words: torch.Tensor, count: int) -> torch.Tensor:  # int32 [W, C] -> int64 [count, C]
        w = words.to(torch.int64) & 0xFFFFFFFF
        w = torch.cat([w, torch.zeros_like(w[:1])])
        j = torch.arange(count)
        lo, hi, sh = w[j * bits // 32], w[j * bits // 32 + 1], (j * bits % 32)[:, None]
        return ((lo | (hi << 32)) >> sh) & (2**bits - 1)

    out = {k: v.float() if v.is_floating_point() else v for k, v in t.items()
           if k.rsplit(".", 1)[1] not in ("qweight", "qzeros", "scales", "g_idx")}
    for p in {k.rsplit(".", 1)[0] for k in t if k.endswith(".qweight")}:
        g, s = t[f"{p}.g_idx"].long(), t[f"{p}.scales"].float()
        q = unpack(t[f"{p}.qweight"], g.shape[0])
        z = unpack(t[f"{p}.qzeros"].t(), s.shape[1]).t() + (1 if v1 else 0)
        out[f"{p}.weight"] = (s[g] * (q - z[g]).float()).t().contiguous()
    return out


def their_weights_fp32(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """GPTQModel's own unpacking (TorchLinear.dequantize_weight, after its v1 -> v2 zero conversion), with the
    scales widened to fp32 so that nothing is rounded: {module name: W [N, K]}."""
    out = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "dequantize_weight") and hasattr(mod, "qweight"):
            mod.scales = mod.scales.float()
            out[name] = mod.dequantize_weight().float().t().contiguous()
    return out


def greedy(model: torch.nn.Module, prompts: list[list[int]]) -> list[list[int]]:
    with torch.no_grad():
        return [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(p):].tolist() for p in prompts]


def cmd_read(work: Path) -> None:
    import gptqmodel
    import optimum.version
    import transformers
    from gptqmodel import BACKEND, GPTQModel
    from transformers import AutoConfig, AutoModelForCausalLM, GPTQConfig

    torch.set_num_threads(1)
    prompts = json.loads((work / "prompts.json").read_text())
    versions = {"torch": str(torch.__version__), "transformers": transformers.__version__,
                "optimum": optimum.version.__version__, "gptqmodel": gptqmodel.__version__}
    for name, *_ in CASES:
        ckpt, ours = work / name, torch.load(work / f"{name}.ours.pt", weights_only=False)
        gens = [o["tokens"].tolist() for o in ours["runner"]]
        res: dict = {"versions": versions}
        indep = independent_state_dict(ckpt)
        # 1. as shipped: transformers picks the kernel (on the CPU: TorchAtenLinear, bf16 math, for 4-bit)
        model, info = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32, device_map="cpu",
                                                           output_loading_info=True)
        res["hf_loading_info"] = {k: sorted(v) if isinstance(v, (set, list)) else str(v) for k, v in info.items()}
        res["hf_kernel"] = type(model.model.layers[0].self_attn.q_proj).__name__
        res["hf"], res["hf_generate"] = forced_logits(model, prompts, gens), greedy(model, prompts)
        # 2. transformers with GPTQModel's reference torch kernel, fp32: the format check, weight by weight
        bits = json.loads((ckpt / "config.json").read_text())["quantization_config"]["bits"]
        model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32, device_map="cpu",
                                                     quantization_config=GPTQConfig(bits=bits, backend="torch"))
        res["hf_torch_kernel"] = type(model.model.layers[0].self_attn.q_proj).__name__
        theirs = their_weights_fp32(model)
        res["weights_vs_independent"] = max(float((w - indep[f"{k}.weight"]).abs().max()) for k, w in theirs.items())
        res["weights_compared"] = len(theirs)
        res["hf_torch"], res["hf_torch_generate"] = forced_logits(model, prompts, gens), greedy(model, prompts)
        # 3. GPTQModel's own loader (reads quantize_config.json); it only loads fp16/bf16, then widened to fp32
        try:
            gm = GPTQModel.load(str(ckpt), device="cpu", backend=BACKEND.TORCH, dtype=torch.float16)
            res["gptqmodel_kernel"] = type(gm.model.model.layers[0].self_attn.q_proj).__name__
            gm.model.float()
            res["gptqmodel"] = forced_logits(gm.model, prompts, gens)
        except Exception as e:  # recorded, not fatal: the comparison reports it
            res["gptqmodel_error"] = f"{type(e).__name__}: {e}"
        # 4. the independent dequantizer above, in a plain fp32 transformers model
        raw = json.loads((ckpt / "config.json").read_text())
        raw.pop("quantization_config")
        plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw), dtype=torch.float32).eval()
        missing, unexpected = plain.load_state_dict(indep, strict=False)
        plain.tie_weights()
        res["independent_missing"], res["independent_unexpected"] = list(missing), list(unexpected)
        res["independent"] = forced_logits(plain, prompts, gens)
        torch.save(res, work / f"{name}.theirs.pt")
        print(f"{name}: read by {res['hf_kernel']} / {res['hf_torch_kernel']} / "
              f"{res.get('gptqmodel_kernel', res.get('gptqmodel_error'))}", flush=True)


def reduced_precision_logits(ckpt: Path, kernel: str, ours: dict) -> list[torch.Tensor]:
    """Our dequantized model with the rounding of transformers' default CPU kernel emulated: TorchAtenLinear
    runs the linears in bf16 (activations and weights), TorchLinear dequantizes the weights in fp16."""
    from inlaid_worker.quant import load_dequantized_model

    model = load_dequantized_model(ckpt)
    for layer in model.model.layers:
        for mod in layer.modules():
            if isinstance(mod, torch.nn.Linear):
                if kernel == "TorchAtenLinear":
                    w = mod.weight.detach().bfloat16()
                    mod.forward = lambda x, w=w: torch.nn.functional.linear(x.bfloat16(), w).float()
                else:
                    mod.weight.data = mod.weight.data.half().float()
    prompts = json.loads((ckpt.parent / "prompts.json").read_text())
    return forced_logits(model, prompts, [o["tokens"].tolist() for o in ours["runner"]])


def cmd_compare(work: Path, json_out: Path | None) -> None:
    rows = []
    for name, *_ in CASES:
        ours, theirs = torch.load(work / f"{name}.ours.pt", weights_only=False), torch.load(work / f"{name}.theirs.pt", weights_only=False)
        ref = [o["logits"] for o in ours["runner"]]

        def maxdiff(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
            return max(float((x - y).abs().max()) for x, y in zip(xs, ys))

        eos = json.loads((work / name / "config.json").read_text()).get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [eos])

        def same(gens: list[list[int]]) -> int:  # prompts whose greedy tokens agree (generate stops at EOS)
            cut = lambda t: t[: next((i + 1 for i, x in enumerate(t) if x in eos), len(t))]  # noqa: E731
            return sum(cut(o["tokens"].tolist()) == cut(g) for o, g in zip(ours["runner"], gens))

        baseline = reduced_precision_logits(work / name, theirs["hf_kernel"], ours)
        row = {"case": name, "logit_absmax": max(float(r.abs().max()) for r in ref),
               "weights_vs_independent": theirs["weights_vs_independent"],
               "weights_compared": theirs["weights_compared"],
               "runner_vs_our_dequant_hf": maxdiff(ref, ours["dequant_hf"]),
               "runner_vs_independent": maxdiff(ref, theirs["independent"]),
               "runner_vs_transformers_torch_fp32": maxdiff(ref, theirs["hf_torch"]),
               "greedy_same_transformers_torch_fp32": same(theirs["hf_torch_generate"]),
               "runner_vs_transformers_auto": maxdiff(ref, theirs["hf"]),
               "greedy_same_transformers_auto": same(theirs["hf_generate"]), "prompts": len(ref),
               "runner_vs_ours_emulating_auto_kernel": maxdiff(ref, baseline),
               "hf_kernel": theirs["hf_kernel"], "hf_torch_kernel": theirs["hf_torch_kernel"],
               "hf_missing": theirs["hf_loading_info"].get("missing_keys"),
               "hf_unexpected": theirs["hf_loading_info"].get("unexpected_keys"),
               "independent_unexpected": theirs["independent_unexpected"], "versions": theirs["versions"]}
        if "gptqmodel" in theirs:
            row.update(runner_vs_gptqmodel_load=maxdiff(ref, theirs["gptqmodel"]),
                       gptqmodel_kernel=theirs["gptqmodel_kernel"])
        else:
            row["gptqmodel_error"] = theirs["gptqmodel_error"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "versions"}), flush=True)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["quantize", "read", "compare", "all"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/interop"))
    ap.add_argument("--reader-python", default="/tmp/interop-venv/bin/python")
    ap.add_argument("--json", type=Path, default=None, help="write the comparison rows here")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    a = ap.parse_args()
    if a.cases:
        CASES[:] = [c for c in CASES if c[0] in a.cases.split(",")]
    a.work.mkdir(parents=True, exist_ok=True)
    if a.step in ("quantize", "all"):
        cmd_quantize(a.work)
    if a.step == "read":
        cmd_read(a.work)
    if a.step == "all":
        subprocess.run([a.reader_python, __file__, "read", "--work", str(a.work), "--cases", a.cases], check=True,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if a.step in ("compare", "all"):
        cmd_compare(a.work, a.json)


if __name__ == "__main__":
    main()
