"""Tokenize / Detokenize (vLLM's /tokenize and /detokenize through the gateway): the ids are those Prepare gives
the same prompt or messages (the tool-aware template path included), without the context-length check; ids
outside the vocabulary and unknown models are refused. A tiny random Llama with a Llama-3.1-style template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from tool_templates import LLAMA31_TEMPLATE, WEATHER


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from transformers import AutoTokenizer

    model = make_tiny_llama(tmp_path_factory.mktemp("tokenize") / "model", max_positions=1024)
    from tokenizers import processors

    tok = AutoTokenizer.from_pretrained(str(model))
    tok.chat_template = LLAMA31_TEMPLATE
    # a BOS when special tokens are added (as Llama's tokenizers do; the template writes none of its own)
    bos = (tok.bos_token, tok.bos_token_id)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    tok.save_pretrained(str(model))
    with serving(model, kv_cache_bytes=2 << 20) as (s, _running):
        yield s


def _base(stub: Any) -> str:
    return str(stub.GetInfo(worker_pb2.InfoRequest()).base_model)


def test_tokenize_gives_prepares_ids_and_the_context_limit(stub: Any) -> None:
    model = _base(stub)
    prepared = stub.Prepare(worker_pb2.PrepareRequest(model=model, prompt="hello world"))
    res = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="hello world", return_token_strs=True))
    assert list(res.token_ids) == list(prepared.prompt_token_ids)
    assert res.max_model_len == stub.GetInfo(worker_pb2.InfoRequest()).max_model_len
    assert len(res.token_strs) == len(res.token_ids) and all(isinstance(s, str) for s in res.token_strs)
    long = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="hello world " * 1000))
    assert len(long.token_ids) > res.max_model_len  # Prepare would refuse it; Tokenize only counts
    bare = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="hello world", add_special_tokens=False))
    assert list(bare.token_ids) == list(res.token_ids)[len(res.token_ids) - len(bare.token_ids) :]


def test_tokenize_renders_chat_and_tools_as_prepare_does(stub: Any) -> None:
    model = _base(stub)
    call = common_pb2.ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        common_pb2.ChatMessage(role="user", content="Weather?"),
        common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call])),
        common_pb2.ChatMessage(role="tool", content="18C", tool_call_id="c1"),
    ]
    tools = json.dumps([WEATHER])
    prepared = stub.Prepare(worker_pb2.PrepareRequest(model=model, messages=messages, tools=tools))
    res = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages, tools=tools))
    assert list(res.token_ids) == list(prepared.prompt_token_ids)
    without = stub.Tokenize(
        worker_pb2.TokenizeRequest(model=model, messages=messages, tools=tools, add_generation_prompt=False)
    )
    assert 0 < len(without.token_ids) < len(res.token_ids)
    assert list(res.token_ids)[: len(without.token_ids)] == list(without.token_ids)


def test_add_special_tokens_follows_vllms_defaults(stub: Any) -> None:
    """Unset: true for a prompt, false for messages (the chat template holds the special tokens); true on messages
    adds the tokenizer's BOS on top of the template's text, as vLLM's /tokenize does. Messages' default is Prepare's."""
    model = _base(stub)
    messages = [common_pb2.ChatMessage(role="user", content="hi there")]
    prepared = list(stub.Prepare(worker_pb2.PrepareRequest(model=model, messages=messages)).prompt_token_ids)
    default = list(stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages)).token_ids)
    off = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages, add_special_tokens=False))
    on = list(
        stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages, add_special_tokens=True)).token_ids
    )
    assert default == prepared == list(off.token_ids)
    bos = on[0]
    assert on[1:] == default and default[0] != bos
    prompt = list(stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="hi there")).token_ids)
    bare = list(
        stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="hi there", add_special_tokens=False)).token_ids
    )
    assert prompt == [bos, *bare]


def test_prepare_follows_add_special_tokens_for_messages(stub: Any) -> None:
    """Chat completions' add_special_tokens reaches Prepare: true adds the tokenizer's BOS on top of the template's
    text (the tool-aware template path too); false and unset do not (vLLM's chat default). Tokenize agrees."""
    model = _base(stub)
    messages = [common_pb2.ChatMessage(role="user", content="hi there")]

    def prepare(**kw: Any) -> list[int]:
        return list(stub.Prepare(worker_pb2.PrepareRequest(model=model, messages=messages, **kw)).prompt_token_ids)

    unset, off, on = prepare(), prepare(add_special_tokens=False), prepare(add_special_tokens=True)
    bos = list(stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt="x")).token_ids)[0]
    assert unset == off and off[0] != bos
    assert on == [bos, *off]
    tokenized = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages, add_special_tokens=True))
    assert list(tokenized.token_ids) == on
    tools = json.dumps([WEATHER])
    with_tools = prepare(tools=tools)
    assert prepare(tools=tools, add_special_tokens=True) == [bos, *with_tools] and with_tools[0] != bos


def test_empty_tools_list_is_no_tools(stub: Any) -> None:
    model = _base(stub)
    messages = [common_pb2.ChatMessage(role="user", content="hi")]
    plain = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages)).token_ids
    empty = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages, tools="[]")).token_ids
    prepared = stub.Prepare(worker_pb2.PrepareRequest(model=model, messages=messages, tools="[]")).prompt_token_ids
    assert list(empty) == list(plain) == list(prepared)


def test_detokenize_round_trips_and_refuses_ids_outside_the_vocabulary(stub: Any) -> None:
    model = _base(stub)
    messages = [common_pb2.ChatMessage(role="user", content="hi there")]
    ids = list(stub.Tokenize(worker_pb2.TokenizeRequest(model=model, messages=messages)).token_ids)
    text = stub.Detokenize(common_pb2.DetokenizeRequest(model=model, token_ids=ids)).prompt
    assert "<|start_header_id|>user<|end_header_id|>" in text and "hi there" in text  # special tokens kept
    again = stub.Tokenize(worker_pb2.TokenizeRequest(model=model, prompt=text, add_special_tokens=False)).token_ids
    assert list(again) == ids
    with pytest.raises(grpc.RpcError) as err:
        stub.Detokenize(common_pb2.DetokenizeRequest(model=model, token_ids=[1, 320]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token id 320 is outside the vocabulary" in (err.value.details() or "")


def test_unknown_model_and_empty_input(stub: Any) -> None:
    for call in (
        lambda: stub.Tokenize(worker_pb2.TokenizeRequest(model="nope", prompt="x")),
        lambda: stub.Detokenize(common_pb2.DetokenizeRequest(model="nope", token_ids=[1])),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.Tokenize(worker_pb2.TokenizeRequest(model=_base(stub)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
