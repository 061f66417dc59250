"""The quantizer child's work in this process (update_checkpoint adding quantizer_memory.py's third task, 1 torch
thread), with RSS and glibc's heap statistics (mallinfo2: all arenas) after each layer: whether the memory a
run keeps is live (malloc's used bytes) or held free by the allocator. Diagnosis for quantizer_memory.py's runs.

  .venv/bin/python bench/onboard/child_heap.py --root /tmp/qm/root [--after none|gc|trim|gc+trim] [--every 5]

--after: what runs after each layer (onboard/memory.release steps; `none`: nothing). Prints a line every
--every layers and a RESULT line (wall, user and system CPU seconds, minor page faults, the trim calls' seconds,
the peak RSS).
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                  "fsmblks", "uordblks", "fordblks", "keepcost")]


def status_mib() -> dict[str, int]:
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    lines = Path("/proc/self/status").read_text().splitlines()
    return {ln.split(":")[0]: int(ln.split()[1]) // 1024 for ln in lines if ln.startswith(keys)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True, help="quantizer_memory.py's set-up directory")
    ap.add_argument("--after", default="none")
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import torch
    from inlaid_worker.onboard.memory import release
    from inlaid_worker.quant import LayerResult, TaskData, update_checkpoint
    from inlaid_worker.quant.calib import load_calibration
    from quantizer_memory import setup  # type: ignore[import-not-found]
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    steps = () if args.after == "none" else tuple(args.after.split("+"))
    paths = setup(args.root)
    seqs = load_calibration(paths["calib"], AutoTokenizer.from_pretrained(paths["base"]), 256)
    release_s: list[float] = []

    def on_layer(res: LayerResult) -> None:
        t = time.perf_counter()
        release(steps)
        release_s.append(time.perf_counter() - t)
        if res.layer % args.every == 0 or res.layer == res.num_layers - 1:
            mi = libc.mallinfo2()
            print(f"layer {res.layer}: {status_mib()} malloc used {mi.uordblks // MIB} MiB, "
                  f"free {mi.fordblks // MIB} MiB", flush=True)

    out = Path(tempfile.mkdtemp(prefix="child-heap-")) / "out"
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    update_checkpoint(paths["ckpt"], paths["base"], out, add=[TaskData(paths["task"], Path(paths["adapter"]), seqs)],
                      on_layer=on_layer)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"RESULT after={args.after} wall {time.perf_counter() - t0:.1f} s user {r1.ru_utime - r0.ru_utime:.1f} s "
          f"sys {r1.ru_stime - r0.ru_stime:.1f} s minflt {r1.ru_minflt - r0.ru_minflt} release {sum(release_s):.2f} s "
          f"peak RSS {status_mib()['VmHWM']} MiB")


if __name__ == "__main__":
    main()
