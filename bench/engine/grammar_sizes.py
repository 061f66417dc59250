"""Compiled grammar sizes (what --grammar-cache-bytes counts) and compile times (not a test; run by hand):

    PYTHONPATH=workers nice -n 10 .venv/bin/python bench/engine/grammar_sizes.py

SmolLM2-135M-Instruct's tokenizer (vocab 49152), the worker's GrammarCache (one compile each, cold), then the
strict string rule against xgrammar's own compile of a schema with maxLength strings (best of 3 each)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.strict_json import strict_json_schema_grammar
from inlaid_worker.engine.structured import StructuredOutput
from inlaid_worker.model.smollm2 import ensure_smollm2
from transformers import AutoTokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "[A-Za-z ]{1,12}"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
BOUNDED = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "summary": {"type": "string", "minLength": 10, "maxLength": 200},
        "n": {"type": "integer"},
    },
    "required": ["title", "summary", "n"],
}
WIDE = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string", "pattern": f"[a-z]{{1,{i % 40 + 1}}}"} for i in range(200)},
}
SPECS = {
    "json_schema, 4 fields": StructuredOutput("json_schema", json.dumps(SCHEMA)),
    "json_schema, maxLength strings": StructuredOutput("json_schema", json.dumps(BOUNDED)),
    "json_schema, 200 pattern fields": StructuredOutput("json_schema", json.dumps(WIDE)),
    "json_object": StructuredOutput("json_object"),
    "regex (an e-mail shape)": StructuredOutput("regex", r"[a-z]{3,8}@[a-z]{2,5}\.(com|org)"),
    "choice of 4": StructuredOutput("choice", choices=("yes", "no", "maybe", "unknown")),
}


def best_ms(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3, out


def main() -> None:
    tok = AutoTokenizer.from_pretrained(ensure_smollm2())
    cache = GrammarCache(tok, {int(tok.eos_token_id)}, vocab_size=len(tok))
    cache.compile(StructuredOutput("regex", "warm"))  # builds the tokenizer info
    print("| grammar | memory_size_bytes | compile ms (cold) |\n|---|---:|---:|")
    for name, so in SPECS.items():
        ms, compiled = best_ms(lambda so=so: cache.compile(so), runs=1)
        print(f"| {name} | {compiled.memory_size_bytes:,} | {ms:.0f} |")
    compiler = cache._compiler
    spec = json.dumps(BOUNDED)
    loose_ms, loose = best_ms(lambda: compiler.compile_json_schema(spec, any_whitespace=False))
    strict_ms, strict = best_ms(lambda: compiler.compile_grammar(strict_json_schema_grammar(spec)))
    print(f"\nmaxLength schema: xgrammar's rule {loose_ms:.1f} ms / {loose.memory_size_bytes:,} bytes; ", end="")
    print(f"strict rule {strict_ms:.1f} ms / {strict.memory_size_bytes:,} bytes (best of 3)")


if __name__ == "__main__":
    main()
