"""Where the runner's eager steps (prefill chunks padded past INLAID_PREFILL_GRAPH_MAX_TOKENS) spend their time, from
inside a served run (bench/engine/served_steps.py --probe-eager N).

Every eager step gets phase timers on its record: `eager_inputs_ms` (mixed_layout, the LoRA batch, cos/sin and the
small host-to-device copies; host time), `eager_launch_ms` (forward_fast and the lm_head up to the return, host time)
and `eager_gpu_ms` (to the end of the GPU work: a sync after the launch), plus the CUDA allocator's retries and
cudaMallocs during the step and the autotuner entries it added (`tunes`: Triton autotune keys and quant_matmul's
tuned shapes; served_shape.Counters counts them as one-off work). The likely eager trace steps (more than
--probe-min-tokens rows) whose ordinals --probe-at lists run under torch.profiler (tables in eager-profile.txt, chrome
traces gzipped; such a step is left out of the cost points). After the run, `replay` times the last --probe-keep
eager StepInputs again: cold (first run of that shape in a variant) and warm,
with SDPA as is and with the cuDNN attention backend left out, and warm without LoRA rows; logits of the variants are
compared on the same KV state.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import torch
from inlaid_worker.kernels import decode_fused, paged_decode, quant_matmul_config
from inlaid_worker.model import kernel_lora, llama_fast

AUTOTUNERS = (paged_decode._decode_tuned, decode_fused._fused_tuned, decode_fused._vec_tuned)


def tune_count() -> int:
    """Autotuned keys so far (Triton autotune caches and quant_matmul's tuned shapes): a new one means a tuning run."""
    return sum(len(getattr(a, "cache", {})) for a in AUTOTUNERS) + len(quant_matmul_config._TUNED)


def _alloc_stats(dev: torch.device) -> tuple[int, int]:
    if dev.type != "cuda":
        return 0, 0
    s = torch.cuda.memory_stats(dev)
    return int(s.get("num_alloc_retries", 0)), int(s.get("num_device_alloc", 0))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _labelled(fn, label: str, probe: EagerProbe):  # type: ignore[no-untyped-def]
    def wrapped(*a, **k):  # type: ignore[no-untyped-def]
        if not probe.profiling:
            return fn(*a, **k)
        with torch.profiler.record_function(label):
            return fn(*a, **k)

    return wrapped


class EagerProbe:
    def __init__(self, runner, out_dir: Path, profile_at: set[int], keep: int,
                 min_tokens: int = 1024) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
        self.runner, self.dev, self.out_dir, self.min_tokens = runner, runner.device, out_dir, min_tokens
        self.profile_at, self.keep = profile_at, keep
        self.kept: deque = deque(maxlen=keep)  # the last `keep` eager trace steps' StepInputs, for replay
        self.tables: list[str] = []
        self.profiling = False
        self.armed = False  # the trace phase is on: count and profile eager steps
        self._prof: torch.profiler.profile | None = None
        self._rec: dict = {}
        self._seen = 0
        inputs, logits = runner.eager_inputs, runner.eager_logits

        def eager_inputs(step):  # type: ignore[no-untyped-def]
            if self.armed and self.keep:
                self.kept.append(step)
            t0 = time.perf_counter()
            with torch.profiler.record_function("eager_inputs") if self.profiling else _null():
                x = inputs(step)
            self._rec["eager_inputs_ms"] = 1e3 * (time.perf_counter() - t0)
            return x

        def eager_logits(x):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            with torch.profiler.record_function("eager_forward") if self.profiling else _null():
                out = logits(x)
            t1 = time.perf_counter()
            _sync(self.dev)
            self._rec.update(eager_launch_ms=1e3 * (t1 - t0), eager_gpu_ms=1e3 * (time.perf_counter() - t0),
                             eager_prefill_chunks=len(x.layout.prefills),
                             eager_decode_rows=int(x.layout.decode_rows.numel()))  # fmt: skip
            return out

        runner.eager_inputs, runner.eager_logits = eager_inputs, eager_logits
        llama_fast._attend = _labelled(llama_fast._attend, "attend", self)
        kl = kernel_lora.KernelLoraContext
        kl.add = _labelled(kl.add, "lora_add", self)
        kl.add_fused = _labelled(kl.add_fused, "lora_add_fused", self)

    def before_step(self, rows: int, tokens: int) -> None:
        """After scheduling, before the runner: start the profiler for a likely eager step (tokens past min_tokens)."""
        self._rec = {"_alloc": _alloc_stats(self.dev)}
        if not (self.armed and tokens > self.min_tokens):
            return
        self._seen += 1
        if self._seen not in self.profile_at:
            return
        acts = [torch.profiler.ProfilerActivity.CPU]
        if self.dev.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=acts, record_shapes=False)
        self._prof.start()
        self.profiling = True
        self._rec["profiled"] = True
        self._rec["_desc"] = f"{rows} rows, {tokens} tokens"

    def after_step(self, step_s: float) -> dict:
        """The probe's fields for the step's record (empty for non-eager steps that were not profiled)."""
        rec, self._rec = self._rec, {}
        retries0, mallocs0 = rec.pop("_alloc", (0, 0))
        desc = rec.pop("_desc", "")
        if self._prof is not None:
            self._prof.stop()
            self.profiling = False
            self._write_profile(self._prof, desc, step_s, rec)
            self._prof = None
        if "eager_gpu_ms" not in rec:
            return {k: v for k, v in rec.items() if k == "profiled"}
        retries, mallocs = _alloc_stats(self.dev)
        return dict(rec, alloc_retries=retries - retries0, cuda_mallocs=mallocs - mallocs0)

    def _write_profile(self, prof: torch.profiler.profile, desc: str, step_s: float, rec: dict) -> None:
        n = len(self.tables) + 1
        avgs = prof.key_averages()
        dev_total = sum(getattr(e, "self_device_time_total", 0.0) for e in avgs) / 1e3
        head = (f"## profiled eager step {n}: {desc}; engine step {1e3 * step_s:.1f} ms (profiler on), "
                f"phases {', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}' for k, v in rec.items())}; "
                f"sum of GPU kernel self time {dev_total:.1f} ms")  # fmt: skip
        parts = [head, "", "### by self CPU time", "```",
                 avgs.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60), "```"]  # fmt: skip
        if self.dev.type == "cuda":
            parts += ["### by self GPU time", "```",
                      avgs.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60), "```"]  # fmt: skip
        self.tables.append("\n".join(parts))
        raw = self.out_dir / f"eager-trace-{n}.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()

    def replay(self, budget_s: float) -> list[dict]:
        """Kept eager steps again: alternating variants cold then warm, no-LoRA warm, logits compared."""
        out: list[dict] = []
        t_end = time.perf_counter() + budget_s
        self.armed = False
        no_cudnn = None
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            no_cudnn = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        except ImportError:
            pass
        for i, step in enumerate(self.kept):
            if time.perf_counter() > t_end:
                break
            variant = "no-cudnn" if (i % 2 and no_cudnn) else "default"
            ctx = (lambda: sdpa_kernel(no_cudnn)) if variant == "no-cudnn" else _null  # noqa: E731
            row = dict(variant=variant, tokens=step.num_tokens, seqs=step.num_seqs,
                       prefill_chunks=sum(1 for a, b in zip(step.query_start_loc[:-1].tolist(),
                                                              step.query_start_loc[1:].tolist()) if b - a > 1),
                       distinct_adapters=len(set(step.adapter_ids.tolist()) - {-1}))  # fmt: skip
            times = []
            for _ in range(3):
                tunes0 = tune_count()
                with ctx():
                    t0 = time.perf_counter()
                    logits = self.runner.execute_device(step)
                    _sync(self.dev)
                times.append(1e3 * (time.perf_counter() - t0))
                row.setdefault("tunes_cold", tune_count() - tunes0)
            logits = logits.clone()  # a graph step's logits are a view of the shared buffer the next step overwrites
            row.update(cold_ms=times[0], warm_ms=min(times[1:]), inputs_ms=self._rec.get("eager_inputs_ms", 0.0),
                       launch_ms=self._rec.get("eager_launch_ms", 0.0))  # fmt: skip
            other = (lambda: sdpa_kernel(no_cudnn)) if variant == "default" and no_cudnn else _null  # noqa: E731
            with other():
                self.runner.execute_device(step)  # the other variant, warm-up then compare
                t0 = time.perf_counter()
                alt = self.runner.execute_device(step)
                _sync(self.dev)
                row["other_variant_warm_ms"] = 1e3 * (time.perf_counter() - t0)
            row["logits_max_abs_diff"] = float((alt.float() - logits.float()).abs().max())
            base = replace(step, adapter_ids=torch.full_like(step.adapter_ids, -1))
            self.runner.execute_device(base)
            t0 = time.perf_counter()
            self.runner.execute_device(base)
            _sync(self.dev)
            row["no_lora_warm_ms"] = 1e3 * (time.perf_counter() - t0)
            out.append(row)
        return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None
