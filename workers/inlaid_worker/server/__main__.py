"""`python -m inlaid_worker.server --model DIR|smollm2 ...`: serves until SIGTERM/SIGINT, then drains.

Prints one JSON line `{"event":"ready","port":...}` on stdout once it accepts calls; logs go to stderr.
"""

from __future__ import annotations

import gc
import logging
import sys

from inlaid_worker.config import ConfigError, check_gpu_env, load_config
from inlaid_worker.onboard import memory
from inlaid_worker.server.app import announce_ready, build_engine, resolve_model_dir, serve
from inlaid_worker.server.json_log import configure_json_logging
from inlaid_worker.server.metrics import start_metrics
from inlaid_worker.server.stop_signal import StopSignals


def main(argv: list[str] | None = None) -> int:
    configure_json_logging()
    try:
        cfg = load_config(argv)
        check_gpu_env()
        model_dir = resolve_model_dir(cfg.model)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"inlaid worker: {exc}", file=sys.stderr)
        return 2
    try:
        engine = build_engine(cfg, model_dir)
    except ConfigError as exc:  # e.g. a --tool-call-parser the chat template cannot serve
        print(f"inlaid worker: {exc}", file=sys.stderr)
        return 2
    # the model, tokenizer and adapters live as long as the process: keep them out of every later collection
    # (a full collection over them paused steps for 1.1-1.8 ms, 0.1-0.2 ms after a freeze: host-overhead-2026-11-30.md)
    gc.collect()
    gc.freeze()
    # hand back what loading freed but malloc keeps (onboard.memory): SmolLM2-135M on the CPU idles at 1,250-1,251
    # MiB RSS instead of 1,282-1,283 (two starts each, session 10)
    memory.trim_heap()
    worker = serve(cfg, engine, model_dir)
    if cfg.metrics_port is not None:
        metrics = start_metrics(engine, lambda: worker.loop.latest_state.state, cfg.host, cfg.metrics_port)
        logging.getLogger(__name__).info("metrics on /metrics", extra={"metrics_port": metrics.port})
    # SIGTERM / SIGINT, on whichever thread they land (before, a main thread in Event.wait() missed one that landed on
    # another thread: the worker never began to drain)
    stop = StopSignals()
    announce_ready(worker, engine)
    stop.wait()
    logging.getLogger(__name__).info("shutting down")
    worker.stop(grace=5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
