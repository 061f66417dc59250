"""The worker's gRPC server takes the gateway's keepalive pings (worker-connection.ts: every 10 s, idle or not, so a
frozen worker is noticed). With gRPC's defaults (a ping without data more often than every 5 minutes is a strike, 2
strikes end the connection with GOAWAY "too_many_pings") the gateway's Session, and every request on it, would be cut.

A live check at the gateway's real rate would take over 30 s (three 10 s pings); the options are checked here instead,
against the interval the gateway's source sets, and serve() is checked to pass them to its server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import worker_pb2
from inlaid_worker.server.app import GRPC_SERVER_OPTIONS

ROOT = Path(__file__).resolve().parents[3]
GATEWAY_LINK = ROOT / "apps/gateway/src/workers/worker-connection.ts"


def _gateway_ping_interval_ms() -> int:
    """grpc.keepalive_time_ms as the gateway's worker link sets it."""
    found = re.search(r"'grpc\.keepalive_time_ms':\s*([\d_]+)", GATEWAY_LINK.read_text())
    assert found is not None, f"no grpc.keepalive_time_ms in {GATEWAY_LINK}"
    return int(found.group(1).replace("_", ""))


def test_the_server_accepts_pings_at_the_gateways_rate_idle_or_not() -> None:
    options = dict(GRPC_SERVER_OPTIONS)
    interval = _gateway_ping_interval_ms()
    assert interval <= 60_000  # the gateway pings at all, and often enough to notice a frozen worker
    assert options["grpc.keepalive_permit_without_calls"] == 1  # pings between requests are not strikes
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] <= interval
    assert options["grpc.http2.max_ping_strikes"] == 0  # a ping early by jitter never ends the connection


def test_serve_builds_its_server_with_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = grpc.server

    def recording(*args: Any, **kwargs: Any) -> grpc.Server:
        seen.append(kwargs.get("options"))
        return real(*args, **kwargs)

    monkeypatch.setattr(grpc, "server", recording)
    with serving(make_tiny_llama(tmp_path / "model"), kv_cache_bytes=1 << 20) as (stub, _):
        assert stub.GetInfo(worker_pb2.InfoRequest()).base_model
    assert seen == [GRPC_SERVER_OPTIONS]  # before: no options (gRPC's defaults)
