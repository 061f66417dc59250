"""Tool calling through the worker's gRPC API when the model's chat template renders tools itself: GetInfo reports
the parser and native_tools, and Prepare passes PrepareRequest.tools and the messages' tool_calls / tool_call_id
to the template (a tiny random Llama whose tokenizer carries a minimal Llama-3.1-style template; the pythonic and
newer Mistral formats on workers of their own)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from tool_templates import LLAMA31_TEMPLATE, MISTRAL_V11_TEMPLATE, PYTHONIC_TEMPLATE, WEATHER


@pytest.fixture(scope="module")
def llama_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from transformers import AutoTokenizer

    model = make_tiny_llama(tmp_path_factory.mktemp("tools") / "model", max_positions=1024)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.chat_template = LLAMA31_TEMPLATE
    tok.save_pretrained(str(model))
    with serving(model, kv_cache_bytes=2 << 20) as (stub, _running):
        yield stub, AutoTokenizer.from_pretrained(str(model))


def test_get_info_reports_the_template_format(llama_tools: tuple[Any, Any]) -> None:
    stub, _ = llama_tools
    info = stub.GetInfo(worker_pb2.InfoRequest())
    assert (info.tool_call_parser, info.native_tools) == ("llama3_json", True)


def test_prepare_renders_tools_and_history_with_the_template(llama_tools: tuple[Any, Any]) -> None:
    stub, tok = llama_tools
    call = common_pb2.ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        common_pb2.ChatMessage(role="user", content="Weather?"),
        common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call])),
        common_pb2.ChatMessage(role="tool", content="18C", tool_call_id="c1"),
    ]
    res = stub.Prepare(worker_pb2.PrepareRequest(model=_base(stub), messages=messages, tools=json.dumps([WEATHER])))
    text = tok.decode(list(res.prompt_token_ids), skip_special_tokens=False)
    assert '"name": "get_weather", "description": "Weather of a city"' in text  # the tools, from PrepareRequest.tools
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in text  # the past call, in Llama's format
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n18C" in text


def test_prepare_refuses_bad_tools_and_a_conversation_the_template_rejects(llama_tools: tuple[Any, Any]) -> None:
    stub, _ = llama_tools
    user = common_pb2.ChatMessage(role="user", content="hi")
    with pytest.raises(grpc.RpcError) as err:
        stub.Prepare(worker_pb2.PrepareRequest(model=_base(stub), messages=[user], tools="{nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    two = [
        common_pb2.ToolCall(id="a", name="get_weather", arguments="{}"),
        common_pb2.ToolCall(id="b", name="get_weather", arguments="{}"),
    ]
    msgs = [user, common_pb2.ChatMessage(role="assistant", tool_calls=common_pb2.ToolCallList(calls=two))]
    with pytest.raises(grpc.RpcError) as err:
        stub.Prepare(worker_pb2.PrepareRequest(model=_base(stub), messages=msgs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "single tool-calls" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("template", "parser", "past_call"),
    [
        (PYTHONIC_TEMPLATE, "pythonic", '[get_weather(city="Paris")]'),
        (MISTRAL_V11_TEMPLATE, "mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    ],
    ids=["pythonic", "mistral-v11"],
)
def test_other_formats_are_reported_and_rendered(tmp_path: Any, template: str, parser: str, past_call: str) -> None:
    """GetInfo names the parser the template's call format needs; Prepare renders a past call in that format."""
    from transformers import AutoTokenizer

    model = make_tiny_llama(tmp_path / "model", max_positions=1024)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.chat_template = template
    tok.save_pretrained(str(model))
    call = common_pb2.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        common_pb2.ChatMessage(role="user", content="Weather?"),
        common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call])),
        common_pb2.ChatMessage(role="tool", content="18C", tool_call_id="call_1"),
        common_pb2.ChatMessage(role="user", content="Thanks"),
    ]
    with serving(model, kv_cache_bytes=2 << 20) as (stub, _running):
        info = stub.GetInfo(worker_pb2.InfoRequest())
        assert (info.tool_call_parser, info.native_tools) == (parser, True)
        req = worker_pb2.PrepareRequest(model=_base(stub), messages=messages, tools=json.dumps([WEATHER]))
        text = tok.decode(list(stub.Prepare(req).prompt_token_ids), skip_special_tokens=False)
    assert past_call in text
    assert '"name": "get_weather"' in text  # the tools, from PrepareRequest.tools


def _base(stub: Any) -> str:
    return str(stub.GetInfo(worker_pb2.InfoRequest()).base_model)
