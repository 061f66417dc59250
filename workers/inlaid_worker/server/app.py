"""Builds and runs the worker: engine + adapters from the config, the engine loop, the gRPC server."""

from __future__ import annotations

import json
import logging
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from inlaid_worker.config import WorkerConfig
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.factory import EngineOptions, adapter_dirs, create_engine, read_adapter
from inlaid_worker.engine.tool_template import detect_tool_support
from inlaid_worker.gen.inlaid.v1 import worker_pb2_grpc
from inlaid_worker.lora.adapter import AdapterError
from inlaid_worker.onboard.setup import onboarding_servicer
from inlaid_worker.server.engine_loop import EngineLoop

log = logging.getLogger(__name__)
GRPC_THREADS = 64  # each Session holds a thread for its response stream and one for its reader
# The gateway pings its worker every 10 s, idle or not (worker-connection.ts CHANNEL_OPTIONS), to notice a frozen one.
# gRPC's server defaults take a ping more often than every 5 minutes without data as abuse and, after 2 such strikes,
# end the connection with GOAWAY "too_many_pings": every request on it would fail. Pings are accepted every 5 s here.
KEEPALIVE_MIN_PING_INTERVAL_MS = 5_000
GRPC_SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MIN_PING_INTERVAL_MS),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 0),  # 0: no limit on too-early pings (the interval above still applies)
]


def resolve_model_dir(model: str) -> Path:
    if model == "smollm2":
        from inlaid_worker.model.smollm2 import ensure_smollm2

        return ensure_smollm2()
    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {model!r}: no config.json there (give a Hugging Face dir or 'smollm2')")
    return path


def build_engine(cfg: WorkerConfig, model_dir: Path) -> LLMEngine:
    options = EngineOptions(
        device=cfg.device,
        dtype=cfg.dtype,
        kv_cache_bytes=cfg.kv_cache_bytes,
        block_size=cfg.block_size,
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_model_len=cfg.max_model_len,
        enable_prefix_caching=cfg.prefix_caching,
    )
    engine = create_engine(model_dir, options)
    engine.grammars.max_bytes = cfg.grammar_cache_bytes
    if cfg.tool_call_parser != "auto":  # the tokenizer detected the template's own format when it was built
        engine.tokenizer.tool_support = detect_tool_support(engine.tokenizer.hf, cfg.tool_call_parser)
    tools = engine.tokenizer.tool_support
    log.info("tool calls: %s parser, %s", tools.parser, "chat template" if tools.native else "Hermes prompt (gateway)")
    if cfg.adapters_dir:
        for name, path in adapter_dirs(cfg.adapters_dir).items():
            try:
                adapter = read_adapter(path, engine.runner.config, model_dir)  # type: ignore[attr-defined]
            except AdapterError as exc:  # one bad adapter must not keep the others from being served
                log.error("adapter %s refused: %s", name, exc)
                continue
            except Exception:  # backstop: an error no check foresaw still only skips this adapter
                log.exception("adapter %s could not be read; skipped", name)
                continue
            try:
                engine.add_adapter(name, adapter, adapter.rank, tuple(sorted(adapter.targets)))
            except Exception:
                log.exception("adapter %s could not be added; skipped", name)
    if cfg.checkpoint:  # serve the quantized base (inlaid_worker.onboard)
        from inlaid_worker.onboard.setup import serve_checkpoint

        serve_checkpoint(cfg, engine)
    return engine


@dataclass
class RunningWorker:
    server: grpc.Server
    loop: EngineLoop
    port: int

    def stop(self, grace: float = 5.0) -> None:
        # first: an Admit on a Session still open during the grace is refused SHUTTING_DOWN (the gateway queues it
        # again elsewhere) rather than started here and cut off when the grace ends (before, the grammar cache closed
        # only after the server stopped, so no refusal ever said SHUTTING_DOWN)
        self.loop.refuse_new()
        self.server.stop(grace).wait()
        self.loop.stop()
        self.loop.engine.grammars.close()  # its compile/replay threads; a hung compile does not delay the exit


def _add_port(server: grpc.Server, cfg: WorkerConfig) -> int:
    """Plaintext, TLS (--tls-cert/--tls-key) or mTLS (plus --tls-client-ca: client certs required)."""
    address = f"{cfg.host}:{cfg.port}"
    if cfg.tls_cert is None or cfg.tls_key is None:
        return server.add_insecure_port(address)
    key, cert = Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes()
    ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
    return server.add_secure_port(address, creds)


def serve(cfg: WorkerConfig, engine: LLMEngine, model_dir: Path) -> RunningWorker:
    """Starts the engine loop and the gRPC server (non-blocking); port 0 picks a free port."""
    loop = EngineLoop(engine)
    loop.start()
    config = engine.runner.config  # type: ignore[attr-defined]
    servicer = onboarding_servicer(  # WorkerServicer + ValidateAdapter/Requantize (inlaid_worker.onboard)
        cfg, loop, lambda path: read_adapter(path, config, model_dir), AdapterError, model_dir
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_THREADS, thread_name_prefix="grpc"), options=GRPC_SERVER_OPTIONS
    )
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    port = _add_port(server, cfg)
    if port == 0:
        loop.stop()
        raise OSError(f"cannot listen on {cfg.host}:{cfg.port}")
    server.start()
    return RunningWorker(server, loop, port)


def announce_ready(worker: RunningWorker, engine: LLMEngine) -> None:
    line = {
        "event": "ready",
        "port": worker.port,
        "model": engine.adapters.base_model_id,
        "adapters": engine.adapters.names,
        "kv_blocks": engine.limits.num_kv_blocks,
        "max_model_len": engine.limits.max_model_len,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
