"""Session 8 (helper PD): why the Gluon ring GEMV (quant_tcg "tc2") loses under PDL, and quant_tcg.BALANCE.

Per case (7B decode shapes, the tc2 configs the 2026-11-30 retune timed, and tc for reference), us per GEMV call
over rotating weight copies (> 3x L2) in one CUDA graph (bench_kernels.time_rotated, median of 10 replays):
  plain      PDL off (the README kernel table's "iso")
  pdl1       pdl.scope(1), quant_tcg.BALANCE off (the kernel as at HEAD: dependents launch at its start)
  pdl1-bal   pdl.scope(1), BALANCE on (a one-wave grid's ring padded: at most ceil(programs / SMs) per SM)
  pdl2       pdl.scope(4) (the tensor-core GEMVs let dependents launch after their K loop), BALANCE off
  pdl3       pdl.scope(3) (no weight prefetch before the wait), BALANCE off
Each variant's output is checked against the fp32 dequantized product (rel_err) after its timing.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/pd_tcg.py {OUT.json [CASES, e.g. 0,3] | warm SHARD SHARDS}
"""

from __future__ import annotations

import json
import sys
import time

import torch
from bench_kernels import copies, random_gptq, rel_err, time_rotated
from inlaid_worker.kernels import pdl, quant_tcg
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig

# (shape, K, N, M, config; QMMConfig num_stages = the word prefetch depth, > 2: the cp.async ring): the old down pick
# at M = 4 / 8 that lost under PDL, the shipped ring picks (qkv / up M = 8: tc n128 st4; M = 16 tc2), a multi-wave
# ring grid (gate/up M = 8: never padded) and the shipped register-prefetch pick for down M = 8 (tc st1)
CASES = [
    ("7B down 11008x4096", 11008, 4096, 8, QMMConfig(8, 64, 128, 8, 4, 4, True, "tc2")),
    ("7B down 11008x4096", 11008, 4096, 4, QMMConfig(8, 64, 128, 8, 4, 4, True, "tc2")),
    ("7B down 11008x4096", 11008, 4096, 8, QMMConfig(8, 64, 128, 8, 4, 1, True, "tc")),
    ("7B qkv 4096x12288", 4096, 12288, 8, QMMConfig(8, 128, 128, 4, 4, 4, True, "tc")),
    ("7B up 4096x11008", 4096, 11008, 8, QMMConfig(8, 128, 128, 4, 4, 4, True, "tc")),
    ("7B qkv 4096x12288", 4096, 12288, 16, QMMConfig(16, 128, 128, 4, 4, 4, True, "tc2")),
    ("7B gate/up 4096x22016", 4096, 22016, 16, QMMConfig(16, 128, 128, 2, 4, 4, True, "tc2")),
    ("7B gate/up 4096x22016", 4096, 22016, 8, QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2")),
]
# (name, PDL scope mode, BALANCE); "-b": a second timing of the same variant (run-to-run spread); pdl2 / pdl3 on
# the first case only (the diagnosis)
VARIANTS = [("plain", 0, False), ("pdl1", 1, False), ("pdl1-bal", 1, True), ("pdl2", 4, False), ("pdl3", 3, False),
            ("pdl1-b", 1, False), ("pdl1-bal-b", 1, True), ("plain-b", 0, False)]  # fmt: skip


def variants(i: int, cfg: QMMConfig) -> list[tuple[str, int, bool]]:
    ring = cfg.num_stages > 2
    return [v for v in VARIANTS if (ring or "bal" not in v[0]) and (i == 0 or v[0] not in ("pdl2", "pdl3"))]


def warm(shard: int, shards: int) -> None:
    """One call of every variant of every shard-th case: fills Triton's cache (run in parallel before main)."""
    dev = torch.device("cuda")
    for i, (_, k, n, m, cfg) in list(enumerate(CASES))[shard::shards]:
        w = random_gptq(k, n, 4, False)
        x = torch.randn(m, k, device=dev).half()
        y = torch.empty(m, n, device=dev, dtype=torch.float16)
        for _, mode, bal in variants(i, cfg):
            quant_tcg.BALANCE = bal
            with pdl.scope(mode):
                launch_quant_matmul(x, w, cfg, y)
        torch.cuda.synchronize()
        print(f"warm {i} ok", flush=True)


def main() -> None:
    if sys.argv[1] == "warm":
        warm(int(sys.argv[2]), int(sys.argv[3]))
        return
    out = sys.argv[1]
    keep = {int(c) for c in sys.argv[2].split(",")} if len(sys.argv) > 2 else set(range(len(CASES)))
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    rows: list[dict] = []
    meta = dict(device=torch.cuda.get_device_name(dev), sms=props.multi_processor_count, torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))  # fmt: skip
    t0 = time.time()
    for i, (shape, k, n, m, cfg) in enumerate(CASES):
        if i not in keep:
            continue
        torch.manual_seed(m)
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        x = torch.randn(m, k, device=dev).half()
        y = torch.empty(m, n, device=dev, dtype=torch.float16)
        calls = [lambda w=w: launch_quant_matmul(x, w, cfg, y) for w in ws]
        split = min(cfg.split_k, k // 128)
        programs = -(-n // cfg.block_n) * split * -(-m // cfg.block_m)
        row: dict = dict(shape=shape, M=m, cfg=f"{cfg.kind} m{cfg.block_m} n{cfg.block_n} s{cfg.split_k} "
                         f"w{cfg.num_warps} st{cfg.num_stages}", programs=programs,
                         ring=quant_tcg.balance_ring(programs, cfg.num_stages if cfg.num_stages > 2 else 0,
                                                     cfg.block_n, cfg.block_m, meta["sms"]))  # fmt: skip
        for name, mode, bal in variants(i, cfg):
            quant_tcg.BALANCE = bal
            try:
                if mode:
                    with pdl.scope(mode):
                        row[name] = round(time_rotated(calls), 2)
                        y.zero_()
                        calls[0]()
                else:
                    row[name] = round(time_rotated(calls), 2)
                    y.zero_()
                    calls[0]()
                row[name + "_err"] = float(f"{rel_err(x, ws[0], y):.2e}")
            except Exception as exc:  # noqa: BLE001 - reported
                row[name + "_error"] = repr(exc)[:300]
        quant_tcg.BALANCE = True
        row["natural"] = next((v for key, v in quant_tcg._NATURAL.items()
                               if key[0] == cfg.num_stages and key[2:4] == (cfg.block_m, cfg.block_n)), None)  # fmt: skip
        row["t_s"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del ws
        torch.cuda.empty_cache()
        with open(out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
