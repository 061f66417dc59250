"""Worker metrics: engine counters observed per step, served in the Prometheus text format on /metrics by a
small HTTP server thread (`--metrics-port`).

`EngineObserver` wraps the engine's `add_request`, `step` and its scheduler's `schedule` (on the engine loop
thread, the only one that touches the engine) to count admissions, steps, batch sizes, distinct adapters per
step and finished requests, and to log one JSON line per admitted and finished request with its request_id
(the id the gateway sent in Admit). The HTTP thread reads counters under a lock and the engine state through
`EngineLoop.latest_state`, never the engine itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("inlaid_worker.requests")

BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ADAPTER_BOUNDS = (0, 1, 2, 4, 8, 16, 32, 64)
STEP_SECONDS_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += 1
                break
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for b, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{le="{b:g}"}} {cumulative}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:g}", f"{name}_count {self.count}"]
        return out


class WorkerMetrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.admitted = 0
        self.finished: dict[str, int] = {}
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.steps = 0
        self.batch_size = Histogram(BATCH_BOUNDS)
        self.distinct_adapters = Histogram(ADAPTER_BOUNDS)
        self.batch_tokens = Histogram(tuple(float(2**k) for k in range(0, 13)))
        self.step_seconds = Histogram(STEP_SECONDS_BOUNDS)

    def render(self, state: Any, preemptions: int) -> str:
        """`state` is an engine.EngineState (free/total KV blocks, running, waiting, resident adapters)."""
        g: list[tuple[str, str, str, float]] = [
            ("inlaid_worker_requests_admitted_total", "counter", "Requests admitted to the engine.", self.admitted),
            ("inlaid_worker_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", self.prompt_tokens),
            ("inlaid_worker_generated_tokens_total", "counter", "Tokens sampled.", self.generated_tokens),
            ("inlaid_worker_steps_total", "counter", "Engine steps that ran the model.", self.steps),
            ("inlaid_worker_preemptions_total", "counter", "Sequences preempted for KV space.", preemptions),
            ("inlaid_worker_running", "gauge", "Sequences in the running batch.", state.running),
            (
                "inlaid_worker_waiting",
                "gauge",
                "Requests waiting to be scheduled (those waiting for their grammar included).",
                state.waiting,
            ),
            ("inlaid_worker_kv_blocks_total", "gauge", "KV cache blocks.", state.total_kv_blocks),
            ("inlaid_worker_kv_blocks_free", "gauge", "Free KV cache blocks.", state.free_kv_blocks),
            ("inlaid_worker_adapters_resident", "gauge", "Adapters resident.", len(state.resident_adapters)),
        ]
        cache = getattr(state, "adapter_cache", None)  # the runner's host-tier adapter cache, if any
        if cache is not None:
            g += [
                ("inlaid_worker_adapters_registered", "gauge", "Adapters registered (host memory).", cache.registered),
                ("inlaid_worker_adapters_on_device", "gauge", "Adapters resident in device slots.", cache.resident),
                ("inlaid_worker_adapter_slots", "gauge", "Device adapter slots.", cache.capacity),
                ("inlaid_worker_adapter_hits_total", "counter", "Step adapters already on the device.", cache.hits),
                ("inlaid_worker_adapter_misses_total", "counter", "Step adapters loaded on demand.", cache.misses),
                ("inlaid_worker_adapter_evictions_total", "counter", "Adapters evicted (LRU).", cache.evictions),
            ]
        prefix = getattr(state, "prefix_cache", None)  # engine.prefix_cache.PrefixCacheStats
        if prefix is not None and prefix.enabled:
            g += [
                ("inlaid_worker_prefix_cache_queried_tokens_total", "counter",
                 "Tokens of sequences admitted with a prefix-cache lookup.", prefix.queried_tokens),
                ("inlaid_worker_prefix_cache_hit_tokens_total", "counter",
                 "Admitted tokens whose KV came from the prefix cache.", prefix.hit_tokens),
                ("inlaid_worker_prefix_cache_blocks", "gauge", "KV blocks registered in the prefix cache.",
                 prefix.cached_blocks),
                ("inlaid_worker_prefix_cache_evictable_blocks", "gauge",
                 "Cached KV blocks no request holds (counted as free).", prefix.evictable_blocks),
                ("inlaid_worker_prefix_cache_evictions_total", "counter", "Cached KV blocks evicted (LRU).",
                 prefix.evictions),
                ("inlaid_worker_prefix_cache_flushes_total", "counter",
                 "Prefix cache flushes (base weights swapped).", prefix.generation),
            ]
        lines: list[str] = []
        for name, kind, help_, value in g:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        lines += ["# HELP inlaid_worker_requests_finished_total Finished requests by reason.",
                  "# TYPE inlaid_worker_requests_finished_total counter"]
        lines += [f'inlaid_worker_requests_finished_total{{reason="{r}"}} {n}' for r, n in sorted(self.finished.items())]
        for name, help_, h in (
            ("inlaid_worker_batch_size", "Sequences per engine step.", self.batch_size),
            ("inlaid_worker_distinct_adapters_per_step", "Distinct adapters (base model excluded) per step.", self.distinct_adapters),
            ("inlaid_worker_batch_tokens", "Tokens computed per engine step.", self.batch_tokens),
            ("inlaid_worker_step_seconds", "Wall time of one engine step.", self.step_seconds),
        ):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram", *h.lines(name)]
        return "\n".join(lines) + "\n"


class EngineObserver:
    """Wraps one engine's methods (call `attach` once, before the loop starts) to feed WorkerMetrics."""

    def __init__(self, engine: Any, metrics: WorkerMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._admitted_at: dict[str, float] = {}

    def attach(self) -> None:
        add, step = self.engine.add_request, self.engine.step
        schedule, ahead = self.engine.scheduler.schedule, self.engine.scheduler.schedule_ahead

        def add_request(
            request_id: str,
            prompt_token_ids: list[int],
            sampling: Any,
            model: str = "",
            resumed_output_tokens: int = 0,
            grammar: Any = None,
        ) -> None:
            add(request_id, prompt_token_ids, sampling, model, resumed_output_tokens, grammar)
            self._admitted(request_id, model, len(prompt_token_ids))

        def observed(out: Any) -> Any:
            if out is not None and out.chunks:
                with self.metrics.lock:
                    self.metrics.batch_size.observe(len(out.chunks))
                    self.metrics.batch_tokens.observe(out.num_tokens)
                    adapters = {c.seq.adapter for c in out.chunks if c.seq.adapter is not None}
                    self.metrics.distinct_adapters.observe(len(adapters))
            return out

        def observed_schedule() -> Any:
            return observed(schedule())

        def observed_ahead(seqs: Any) -> Any:  # async scheduling's decode step launched ahead (engine/async_step.py)
            return observed(ahead(seqs))

        def observed_step() -> Any:
            t0 = time.perf_counter()
            steps_before = self.engine.num_steps
            outputs = step()
            with self.metrics.lock:
                if self.engine.num_steps > steps_before:
                    self.metrics.steps += 1
                    self.metrics.step_seconds.observe(time.perf_counter() - t0)
                self.metrics.generated_tokens += sum(len(o.token_ids) for o in outputs)
            for o in outputs:
                if o.finish_reason is not None:
                    self._finished(o)
            return outputs

        self.engine.add_request = add_request
        self.engine.scheduler.schedule = observed_schedule
        self.engine.scheduler.schedule_ahead = observed_ahead
        self.engine.step = observed_step

    def _admitted(self, request_id: str, model: str, prompt_tokens: int) -> None:
        self._admitted_at[request_id] = time.perf_counter()
        with self.metrics.lock:
            self.metrics.admitted += 1
            self.metrics.prompt_tokens += prompt_tokens
        log.info("admitted", extra={"event": "admit", "request_id": request_id, "model": model or "(base)",
                                    "prompt_tokens": prompt_tokens})

    def _finished(self, out: Any) -> None:
        reason = getattr(out.finish_reason, "value", str(out.finish_reason))
        started = self._admitted_at.pop(out.request_id, None)
        with self.metrics.lock:
            self.metrics.finished[reason] = self.metrics.finished.get(reason, 0) + 1
        log.info("finished", extra={"event": "finish", "request_id": out.request_id, "finish_reason": reason,
                                    "completion_tokens": out.completion_tokens,
                                    "ms": None if started is None else round((time.perf_counter() - started) * 1000, 1)})


class MetricsServer:
    """GET /metrics on host:port (0 = any free port) from a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, state: Callable[[], Any], preemptions: Callable[[], int],
                 host: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                with metrics.lock:
                    body = metrics.render(state(), preemptions()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics(engine: Any, latest_state: Callable[[], Any], host: str, port: int) -> MetricsServer:
    """Instruments `engine` and serves its metrics; `latest_state()` returns an EngineState snapshot."""
    metrics = WorkerMetrics()
    EngineObserver(engine, metrics).attach()
    return MetricsServer(metrics, latest_state, lambda: int(engine.num_preemptions), host, port)
