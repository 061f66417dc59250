"""Worker /metrics: engine counters (batch size, distinct adapters per step, finished requests) observed on a
tiny random Llama with two adapters, scraped over real HTTP; request log lines carry the request id."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.engine.factory import EngineOptions, add_adapter_dir, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.server.json_log import JsonFormatter
from inlaid_worker.server.metrics import start_metrics


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
        return res.headers["Content-Type"], res.read().decode()


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


def test_metrics_endpoint_counts_steps_batches_and_adapters(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = make_tiny_llama(tmp_path / "model")
    engine = create_engine(model, EngineOptions(kv_cache_bytes=4 << 20))  # type: ignore[call-arg]
    for name, seed in (("a", 1), ("b", 2)):
        add_adapter_dir(engine, name, make_random_adapter(tmp_path / name, model, rank=4, alpha=8, targets=["q_proj"], seed=seed), model)
    server = start_metrics(engine, engine.state, "127.0.0.1", 0)
    try:
        params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
        caplog.set_level(logging.INFO, logger="inlaid_worker.requests")
        for rid, m in (("r-a", "a"), ("r-b", "b"), ("r-base", "")):
            engine.add_request(rid, [1, 2, 3, 4], params, m)
        while engine.has_work:
            engine.step()
        ctype, text = scrape(server.port)
        assert ctype.startswith("text/plain; version=0.0.4")
        assert value(text, "inlaid_worker_requests_admitted_total") == 3
        assert value(text, 'inlaid_worker_requests_finished_total{reason="length"}') == 3
        assert value(text, "inlaid_worker_generated_tokens_total") == 15
        steps = value(text, "inlaid_worker_steps_total")
        assert steps >= 5
        assert value(text, "inlaid_worker_batch_size_count") == steps
        # every step ran all three requests together: 3 sequences, 2 distinct adapters (base excluded)
        assert value(text, 'inlaid_worker_batch_size_bucket{le="2"}') == 0
        assert value(text, 'inlaid_worker_batch_size_bucket{le="4"}') == steps
        assert value(text, 'inlaid_worker_distinct_adapters_per_step_bucket{le="1"}') == 0
        assert value(text, 'inlaid_worker_distinct_adapters_per_step_bucket{le="2"}') == steps
        assert value(text, "inlaid_worker_adapters_resident") == 2
        assert value(text, "inlaid_worker_running") == 0
        lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "inlaid_worker.requests"]
        assert {(x["event"], x["request_id"]) for x in lines} == {(e, r) for e in ("admit", "finish") for r in ("r-a", "r-b", "r-base")}
        assert all(x["level"] == "info" and "ts" in x for x in lines)
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(server.port, "/other")
        assert err.value.code == 404
    finally:
        server.stop()
