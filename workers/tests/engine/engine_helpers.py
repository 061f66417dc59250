"""Test helpers: build engines on tiny models and drive them to completion."""

from __future__ import annotations

from pathlib import Path

from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.factory import EngineOptions, create_engine


def engine_for(model_dir: Path, adapters: dict[str, Path] | None = None, **options: int) -> LLMEngine:
    from inlaid_worker.engine.factory import add_adapter_dir

    engine = create_engine(model_dir, EngineOptions(**options))  # type: ignore[arg-type]
    for name, path in (adapters or {}).items():
        add_adapter_dir(engine, name, path, model_dir)
    return engine


def drain(
    engine: LLMEngine, outputs: dict[str, list[RequestOutput]] | None = None
) -> dict[str, list[RequestOutput]]:
    outputs = {} if outputs is None else outputs
    while engine.has_work:
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs


def tokens(outs: list[RequestOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def text(outs: list[RequestOutput]) -> str:
    return "".join(o.text for o in outs)
