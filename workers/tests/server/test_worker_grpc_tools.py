"""Tool calling through the worker's gRPC API when the model's chat template renders tools itself: GetInfo reports
the parser and native_tools, and Prepare passes PrepareRequest.tools and the messages' tool_calls / tool_call_id
to the template (a tiny random Llama whose tokenizer carries a minimal Llama-3.1-style template; the pythonic and
newer Mistral formats on workers of their own); SamplingParams.keep_tool_markers keeps the format's special markers
in the text (a Mistral-template worker whose tokenizer has [TOOL_CALLS] and [ARGS] as special tokens)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama, make_tokenizer
from grpc_worker import one_request, serving
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


def _text(stub: Any, prompt: list[int], params: common_pb2.SamplingParams) -> str:
    """The text of one request's deltas, through the worker's Session stream."""
    deltas, error = one_request(stub, prompt, params, request_id="m")
    assert error is None, error
    return "".join(d.text for d in deltas)


def test_keep_tool_markers_keeps_the_markers_and_drops_other_special_tokens(tmp_path: Any) -> None:
    model = make_tiny_llama(tmp_path / "model", vocab=320, max_positions=1024)
    tok = make_tokenizer(318)  # + 2 special markers: the model's 320 ids
    tok.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]", "[ARGS]"]})
    assert len(tok) == 320
    tok.chat_template = MISTRAL_V11_TEMPLATE
    tok.save_pretrained(str(model))
    call, eos = int(tok.convert_tokens_to_ids("[TOOL_CALLS]")), int(tok.eos_token_id)
    with serving(model, kv_cache_bytes=2 << 20) as (stub, _running):
        assert stub.GetInfo(worker_pb2.InfoRequest()).tool_call_parser == "mistral"
        prompt = list(stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Weather?")).prompt_token_ids)

        def text(bias: int, keep: bool) -> str:
            p = common_pb2.SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True, keep_tool_markers=keep)
            p.logit_bias.bias[bias] = 100.0
            return _text(stub, prompt, p)

        assert text(call, keep=True) == "[TOOL_CALLS][TOOL_CALLS]"
        assert text(call, keep=False) == ""
        assert text(eos, keep=True) == ""  # EOS (ignored as a stop here) is a special token that is not a marker
