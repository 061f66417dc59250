"""Structured outputs through the worker's gRPC API: Prepare refuses a bad response_format with INVALID_ARGUMENT,
a Session streams output that matches the grammar (with logprobs), and a resumed Admit replays its tokens."""

from __future__ import annotations

import json
import queue
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2

pytest.importorskip("xgrammar")

FINISH = common_pb2.FinishReason
SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "[A-Za-z]{1,10}"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
)


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    model = make_tiny_llama(tmp_path_factory.mktemp("grpc-structured") / "model", max_positions=1024)
    with serving(model, kv_cache_bytes=4 << 20) as (stub, _):
        yield stub


def session(stub: Any, admits: list[worker_pb2.Admit]) -> dict[str, list[Any]]:
    """Admits every request on one Session and collects its deltas (or its error) until all have finished."""
    out: queue.Queue[Any] = queue.Queue()
    for a in admits:
        out.put(worker_pb2.ControlMessage(admit=a))
    call = stub.Session(iter(out.get, None))
    events: dict[str, list[Any]] = {a.request_id: [] for a in admits}
    open_ids = set(events)
    for ev in call:
        kind = ev.WhichOneof("kind")
        if kind == "delta":
            events[ev.delta.request_id].append(ev.delta)
            if ev.delta.finish_reason != FINISH.FINISH_REASON_UNSPECIFIED:
                open_ids.discard(ev.delta.request_id)
        elif kind == "error":
            events[ev.error.request_id].append(ev.error)
            open_ids.discard(ev.error.request_id)
        if not open_ids:
            break
    out.put(None)
    call.cancel()
    return events


def test_prepare_refuses_a_bad_response_format_naming_it(stub: Any) -> None:
    good = [
        common_pb2.SamplingParams(json_schema=SCHEMA),
        common_pb2.SamplingParams(json_object=True),
        common_pb2.SamplingParams(regex="[0-9]+"),
        common_pb2.SamplingParams(choice=common_pb2.StringChoices(values=["a", "b"])),
    ]
    for sampling in good:
        assert stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Hi", sampling=sampling)).prompt_token_ids
    bad = [
        (common_pb2.SamplingParams(json_schema="{not json"), "not valid JSON"),
        (common_pb2.SamplingParams(json_schema='{"type": "nope"}'), "invalid json_schema"),
        (common_pb2.SamplingParams(regex="(a"), "invalid regex"),
        (common_pb2.SamplingParams(choice=common_pb2.StringChoices(values=[])), "choice needs"),
        (common_pb2.SamplingParams(regex="a" * 70_000), "at most"),
    ]
    for sampling, message in bad:
        with pytest.raises(grpc.RpcError) as err:
            stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Hi", sampling=sampling))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "response_format" in err.value.details() and message in err.value.details()


def test_a_session_streams_outputs_that_match_their_grammar(stub: Any) -> None:
    prompt = list(stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Hello")).prompt_token_ids)
    admits = [
        worker_pb2.Admit(
            request_id=f"j{seed}",
            prompt_token_ids=prompt,
            sampling=common_pb2.SamplingParams(max_tokens=200, seed=seed, json_schema=SCHEMA, logprobs=1),
        )
        for seed in range(3)
    ]
    admits.append(
        worker_pb2.Admit(
            request_id="c",
            prompt_token_ids=prompt,
            sampling=common_pb2.SamplingParams(
                max_tokens=50, temperature=0, choice=common_pb2.StringChoices(values=["left", "right"])
            ),
        )
    )
    admits.append(
        worker_pb2.Admit(
            request_id="bad", prompt_token_ids=prompt, sampling=common_pb2.SamplingParams(max_tokens=5, regex="(")
        )
    )
    events = session(stub, admits)
    assert "response_format" in events["bad"][0].message  # an Admit error, the others unaffected
    for rid in ("j0", "j1", "j2"):
        deltas = events[rid]
        assert deltas[-1].finish_reason == FINISH.FINISH_REASON_STOP
        value = json.loads("".join(d.text for d in deltas))
        assert set(value) == {"name", "age"} and re.fullmatch("[A-Za-z]{1,10}", value["name"])
        assert type(value["age"]) is int and 0 <= value["age"] <= 120
        assert sum(len(d.logprobs.tokens) for d in deltas) == sum(len(d.token_ids) for d in deltas)
    assert "".join(d.text for d in events["c"]) in ("left", "right")


def test_a_resumed_admit_replays_its_earlier_tokens(stub: Any) -> None:
    prompt = list(stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Hello")).prompt_token_ids)

    def greedy(rid: str, ids: list[int], resumed: int, max_tokens: int) -> list[Any]:
        sampling = common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0, json_schema=SCHEMA)
        admit = worker_pb2.Admit(request_id=rid, prompt_token_ids=ids, sampling=sampling, resumed_output_tokens=resumed)
        return session(stub, [admit])[rid]

    full = [t for d in greedy("full", prompt, 0, 200) for t in d.token_ids]
    tail = [t for d in greedy("tail", prompt + full[:7], 7, 193) for t in d.token_ids]
    assert full[:7] + tail == full
    # tokens that the grammar cannot have produced: refused on the stream
    refused = greedy("wrong", prompt + prompt[:3], 3, 10)
    assert "response_format" in refused[0].message
