"""Session 19 (issue 4): where the LoRA part of the small-batch decode step goes (ablation, batch 1), and the lever
lora_fused.PARTIALS_MAX_ROWS (split-K partials summed by the expand: no v zero-fill launch, no atomics) against the
path shipped before it (PARTIALS_MAX_ROWS 0), batches 1 / 4 / 16, rank-16 q/k/v/o adapters, one adapter.

s19_lora.py's setup and protocol (s18_lora_auto's capture / time_round): 7B int4 random model, fp16, 512 cached
tokens, decode CUDA graphs (the runner's defaults, PDL at these buckets), the shipped tuner table, ONE runner; every
variant's graph captured once, then --rounds rounds in which the variants take turns: device ms (event-timed
--replays back-to-back replays of the variant's own graph) and wall ms (runner.execute, median of --reps steps).
Variants (the ablations monkeypatch the LoRA entry points during their capture only, and restore them):
  base    no adapter rows (the base-only step, its fusions on)
  lora    the LoRA step, PARTIALS_MAX_ROWS 0 (atomics into a zeroed v: fill + shrink + expand per LoRA call)
  ctl     the same, captured again (noise control)
  cand    the LoRA step, PARTIALS_MAX_ROWS 16 (the lever: shrink + expand per LoRA call)
  noop    LoRA context present (the base fusions it disables stay off) but no LoRA kernel at all
  qkv     only the q/k/v LoRA call (o's is a no-op);  o: only o's
  shrink  fill + shrink, no expand;  expand  expand only (v: a persistent zero buffer; no fill, no shrink)
  nofill  shrink (atomics) + expand into a persistent buffer: no fill launch (values wrong, timing only)
  cand-spN  cand with lora_fused.SPLIT_PROGRAMS N instead of 2048 (fewer K splits, more K tiles per program; at bucket
          1, N 48: q/k/v 16 splits of 2 tiles, o 32 of 1; N 24: q/k/v 8 of 4, o 16 of 2): is a 32-way split sensible?
Ablated variants' logits are wrong (fine for timing); cand's are compared with lora's.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s19_lora_b1.py --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import lora_fused  # noqa: E402
from inlaid_worker.model import kernel_lora  # noqa: E402
from random_model import SHAPES, TARGETS, make_runner, write_config  # noqa: E402
from s18_lora_auto import capture, time_round  # noqa: E402
from steps import BLOCK, load_adapters, make_step  # noqa: E402

ABLATIONS = ("noop", "qkv", "o", "shrink", "expand", "nofill", "cand-sp48", "cand-sp24")
_BUF: dict[tuple, torch.Tensor] = {}


def _persistent(t: int, width: int, plan: lora_fused.ShrinkPlan, device: torch.device) -> torch.Tensor:
    """One zeroed [T, width] v per shape, made during the eager warm-up (never inside a capture)."""
    key = (t, width, device)
    if key not in _BUF:
        _BUF[key] = torch.zeros(t, width, dtype=torch.float32, device=device)
    return _BUF[key]


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """The lever's setting and the ablation's patches while `name`'s graph is captured."""
    saved = (lora_fused.PARTIALS_MAX_ROWS, kernel_lora._apply, kernel_lora.KernelLoraContext.add,
             kernel_lora.KernelLoraContext.add_fused, lora_fused.launch_shrink, lora_fused.launch_expand,
             lora_fused.alloc_v, lora_fused.SPLIT_PROGRAMS)  # fmt: skip
    lora_fused.PARTIALS_MAX_ROWS = 16 if name.startswith("cand") else 0
    if name.startswith("cand-sp"):
        lora_fused.SPLIT_PROGRAMS = int(name[len("cand-sp") :])
    noop = lambda *a, **k: None  # noqa: E731
    if name == "noop":
        kernel_lora._apply = noop
    elif name == "qkv":
        kernel_lora.KernelLoraContext.add = noop  # type: ignore[method-assign]
    elif name == "o":
        kernel_lora.KernelLoraContext.add_fused = noop  # type: ignore[method-assign]
    elif name == "shrink":
        lora_fused.launch_expand = noop
    elif name == "expand":
        lora_fused.launch_shrink, lora_fused.alloc_v = noop, _persistent
    elif name == "nofill":
        lora_fused.alloc_v = _persistent
    try:
        yield
    finally:
        (lora_fused.PARTIALS_MAX_ROWS, kernel_lora._apply, kernel_lora.KernelLoraContext.add,
         kernel_lora.KernelLoraContext.add_fused, lora_fused.launch_shrink, lora_fused.launch_expand,
         lora_fused.alloc_v, lora_fused.SPLIT_PROGRAMS) = saved  # fmt: skip


def launch_notes(runner, b: int) -> dict:  # type: ignore[no-untyped-def]
    """The q/k/v and o LoRA launches' grids at bucket b (one row per block, as the decode graphs stage them)."""
    from inlaid_worker.kernels.lora_batch import LoraBatch

    ar = torch.arange(b, dtype=torch.int32)
    batch = LoraBatch(ar, ar * 0, ar, ar * 0 + 1, 1, b, 16)
    out = {}
    for part, modules in (("qkv", ("q_proj", "k_proj", "v_proj")), ("o", ("o_proj",))):
        pools = [p for m in modules if (p := runner._adapters.pools.active(0, m)) is not None]
        s = lora_fused.segment_args(pools)
        for setting in (0, 16):
            lora_fused.PARTIALS_MAX_ROWS = setting
            plan = lora_fused.shrink_plan(batch, s, pools[0].a.shape[2], len(pools))
            n_tiles = lora_fused.expand_tiles([p.b.shape[2] for p in pools], [0] * len(pools), 256)[2]
            out[f"{part}-partials{setting}"] = dict(
                shrink_grid=(b, plan.rb * len(pools), plan.split), k_tiles_per_program=plan.iters,
                block_k=plan.block_k, block_r=plan.block_r, partials=plan.partials,
                zero_fill=plan.split > 1 and not plan.partials, expand_grid=(b, n_tiles))  # fmt: skip
    lora_fused.PARTIALS_MAX_ROWS = 0
    return out


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--ablate", default="1", help="batches that also run the ablations")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="no new batch after S seconds")
    ap.add_argument("--tag", default="decode-2026-12-01-s19-lora-b1")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    batches = [int(b) for b in args.batches.split(",")]
    ablate = {int(b) for b in args.ablate.split(",") if b}
    ctx = 512
    pool = max(batches) * (ctx // BLOCK + 1) * 2
    runner = make_runner(write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b"), "int4", dev, torch.float16,
                         pool, BLOCK, 32, "triton", True)  # fmt: skip
    c = runner.config
    slot = load_adapters(runner, 16, TARGETS["qkvo"], 1, "qkvo")[0]
    shipped = kernel_lora.GROUPED
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, context=ctx,
                     rank=16, targets="qkvo", shipped_grouped=str(shipped), points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    print(f"setup {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    for b in batches:
        if time.time() - t0 > args.max_seconds:
            res.setdefault("skipped", []).append(b)
            continue
        names = ["base", "lora", "ctl", "cand", *(ABLATIONS if b in ablate else ())]
        steps = {True: make_step(b, 1, ctx, [slot] * b, c.vocab_size, pool),
                 False: make_step(b, 1, ctx, [-1] * b, c.vocab_size, pool)}  # fmt: skip
        graphs = {}
        for v in names:
            with variant(v):
                graphs[v] = capture(runner, steps[v != "base"], shipped)
        ref, lg = graphs["lora"][2].float(), graphs["cand"][2].float()
        check = dict(rel=float((lg - ref).norm() / ref.norm()), argmax=float((lg.argmax(-1) == ref.argmax(-1)).float().mean()),
                     ctl_rel=float((graphs["ctl"][2].float() - ref).norm() / ref.norm()))  # fmt: skip
        rounds: dict = {v: dict(dev=[], wall=[]) for v in names}
        for _ in range(args.rounds):
            for v in names:
                key, g, _ = graphs[v]
                d, w = time_round(runner, steps[v != "base"], key, g, shipped, args)
                rounds[v]["dev"].append(d)
                rounds[v]["wall"].append(w)
        med = {v: {m: statistics.median(r[m]) for m in r} for v, r in rounds.items()}
        per_round = [round(x / y, 4) for x, y in zip(rounds["cand"]["dev"], rounds["lora"]["dev"], strict=True)]
        ctl_round = [round(x / y, 4) for x, y in zip(rounds["ctl"]["dev"], rounds["lora"]["dev"], strict=True)]
        point = dict(batch=b, check=check, launches=launch_notes(runner, b), rounds=rounds, median=med,
                     over_base={v: {m: round(med[v][m] / med["base"][m], 4) for m in ("dev", "wall")} for v in names},
                     lora_part_ms={v: round(med[v]["dev"] - med["base"]["dev"], 4) for v in names},
                     cand_over_lora_dev=per_round, cand_lower=sum(r < 1 for r in per_round),
                     ctl_over_lora_dev=ctl_round)  # fmt: skip
        res["points"].append(point)
        path.write_text(json.dumps(res, indent=1))
        bd = med["base"]["dev"]
        print(f"b{b}: base dev {bd:.3f} wall {med['base']['wall']:.3f} | " + " | ".join(
            f"{v} {med[v]['dev']:.3f} (+{med[v]['dev'] - bd:.3f}) w {med[v]['wall']:.3f}" for v in names[1:])
            + f" | cand/lora dev {med['cand']['dev'] / med['lora']['dev']:.4f} lower {point['cand_lower']}/"
            f"{args.rounds} ({min(per_round):.4f}-{max(per_round):.4f}) ctl/lora {min(ctl_round):.4f}-"
            f"{max(ctl_round):.4f} | logits rel {check['rel']:.1e} argmax {check['argmax']:.3f} ctl rel "
            f"{check['ctl_rel']:.1e} | t {time.time() - t0:.0f} s", flush=True)  # fmt: skip
        del graphs
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
