"""`python -m inlaid_worker.quant`: quantize a Hugging Face Llama directory into a GPTQ checkpoint.

  python -m inlaid_worker.quant --model DIR --method mlgptq --bits 4 --group-size 128 \
      --task name=ADAPTER_DIR:CALIB.jsonl ... --out DIR
Pooled GPTQ also accepts `--task name=:CALIB.jsonl` (no adapter). Prints one progress line per layer. Bad
input (missing calibration file, adapter of another base, bits out of range, existing output) exits with
status 2 and a message, leaving no output behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .calib import load_calibration
from .layerwise import LayerResult
from .quantize import METHODS, TaskData, quantize_checkpoint
from .spec import QuantSpec


def parse_task(arg: str) -> tuple[str, Path | None, Path]:
    name, sep, rest = arg.partition("=")
    adapter, sep2, calib = rest.rpartition(":")
    if not sep or not sep2 or not name or not calib:
        raise ValueError(f"--task {arg!r}: expected name=ADAPTER_DIR:CALIB.jsonl")
    return name, (Path(adapter) if adapter else None), Path(calib)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inlaid_worker.quant", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="Hugging Face model directory (full precision)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--asym", action="store_true", help="asymmetric grid (written as checkpoint_format gptq_v2)")
    p.add_argument("--act-order", action="store_true", help="act-order with static groups")
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--aggregation", default=None, help="MLGPTQ Hessian aggregation (default: the quantizer's; "
                   "'max' = the paper's element-wise max)")
    p.add_argument("--task", action="append", default=[], help="name=ADAPTER_DIR:CALIB.jsonl (repeatable)")
    p.add_argument("--samples", type=int, default=None, help="calibration sequences per task (default: all)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True, type=Path)
    return p


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    spec = QuantSpec(bits=args.bits, group_size=args.group_size, sym=not args.asym, act_order=args.act_order,
                     static_groups=True, percdamp=args.damp)
    if args.out.exists():
        raise ValueError(f"output {args.out} already exists")
    if not (args.model / "config.json").is_file():
        raise ValueError(f"{args.model} is not a Hugging Face model directory (no config.json)")
    parsed = [parse_task(t) for t in args.task]
    tasks: list[TaskData] = []
    if parsed:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(args.model))
        for name, adapter, calib in parsed:
            seqs = load_calibration(calib, tokenizer, args.max_len, args.samples, args.seed)
            tasks.append(TaskData(name, adapter, seqs))

    def progress(res: LayerResult) -> None:
        print(f"layer {res.layer + 1}/{res.num_layers} quantized in {res.seconds:.2f}s", flush=True)

    summary = quantize_checkpoint(args.model, args.out, args.method, spec, tasks, device=args.device,
                                  on_layer=progress, aggregation=args.aggregation)
    print(f"wrote {summary.out_dir} ({summary.method}, tasks {summary.tasks})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
