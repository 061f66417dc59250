"""Tool calling with a model's own chat template (engine/tool_template.py): detection of the template's tool
support and call format, and native rendering through PromptTokenizer.encode_chat. SmolLM2's real tokenizer with
chat templates written for the tests (tests/tool_templates.py); no downloads."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from inlaid_worker.config import TOOL_CALL_PARSER_CHOICES, TOOL_CALL_PARSERS, ConfigError, load_config
from inlaid_worker.engine import tool_template
from inlaid_worker.engine.tokenizer import PromptError, PromptTokenizer
from inlaid_worker.engine.tool_template import (
    HERMES_FALLBACK,
    ToolSupport,
    chat_messages,
    detect_tool_support,
    mistral_id,
    parse_tools,
)
from inlaid_worker.gen.inlaid.v1 import common_pb2
from inlaid_worker.model.smollm2 import ensure_smollm2
from tool_templates import (
    DECOY_TEMPLATE,
    HERMES_TEMPLATE,
    LLAMA31_TEMPLATE,
    MISTRAL_TEMPLATE,
    MISTRAL_V11_TEMPLATE,
    PYTHONIC_PLAIN_TEMPLATE,
    PYTHONIC_TEMPLATE,
    WEATHER,
)


@pytest.fixture(scope="module")
def smollm2_hf() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_smollm2()))


def with_template(hf: Any, template: str | None) -> Any:
    t = copy.copy(hf)  # shallow: the Rust tokenizer is shared, only chat_template differs
    t.chat_template = template
    return t


def history_protos() -> list[common_pb2.ChatMessage]:
    call = common_pb2.ToolCall(id="a1b2c3d4e", name="get_weather", arguments='{"city": "Paris"}')
    return [
        common_pb2.ChatMessage(role="user", content="Weather in Paris?"),
        common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call])),
        common_pb2.ChatMessage(role="tool", content="18C", tool_call_id="a1b2c3d4e"),
    ]


def render_history(hf: Any, template: str) -> tuple[PromptTokenizer, str]:
    """A PromptTokenizer on `template` and its text of history_protos() with WEATHER offered (special tokens kept)."""
    tok = PromptTokenizer(with_template(hf, template))
    return tok, tok.hf.decode(tok.encode_chat(chat_messages(history_protos()), [WEATHER]), skip_special_tokens=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (HERMES_TEMPLATE, ToolSupport("hermes", native=True)),
        (LLAMA31_TEMPLATE, ToolSupport("llama3_json", native=True)),
        (MISTRAL_TEMPLATE, ToolSupport("mistral", native=True)),
        (MISTRAL_V11_TEMPLATE, ToolSupport("mistral", native=True)),
        (PYTHONIC_TEMPLATE, ToolSupport("pythonic", native=True)),
        (PYTHONIC_PLAIN_TEMPLATE, ToolSupport("pythonic", native=True)),
        (DECOY_TEMPLATE, HERMES_FALLBACK),
        (None, HERMES_FALLBACK),
    ],
    ids=["hermes", "llama3_json", "mistral", "mistral-v11", "pythonic", "pythonic-plain", "decoy", "no-template"],
)
def test_detects_tool_support_and_format(smollm2_hf: Any, template: str | None, expected: ToolSupport) -> None:
    assert detect_tool_support(with_template(smollm2_hf, template)) == expected


@pytest.mark.slow
def test_smollm2_own_template_stays_on_the_hermes_fallback(smollm2_hf: Any) -> None:
    assert PromptTokenizer(smollm2_hf).tool_support == HERMES_FALLBACK


@pytest.mark.slow
def test_override(smollm2_hf: Any) -> None:
    hermes = with_template(smollm2_hf, HERMES_TEMPLATE)
    assert detect_tool_support(hermes, "llama3_json") == ToolSupport("llama3_json", native=True)
    assert detect_tool_support(smollm2_hf, "hermes") == HERMES_FALLBACK
    with pytest.raises(ConfigError, match="does not render tools"):
        detect_tool_support(smollm2_hf, "mistral")
    with pytest.raises(ConfigError, match="does not render tools"):
        detect_tool_support(smollm2_hf, "pythonic")
    pythonic = with_template(smollm2_hf, PYTHONIC_TEMPLATE)
    assert detect_tool_support(pythonic, "pythonic") == ToolSupport("pythonic", native=True)
    assert detect_tool_support(pythonic, "hermes") == ToolSupport("hermes", native=True)
    with pytest.raises(ConfigError, match="auto or one of"):
        detect_tool_support(smollm2_hf, "granite")


def test_config_flag_and_env() -> None:
    assert load_config([], env={}).tool_call_parser == "auto"
    assert load_config([], env={"INLAID_WORKER_TOOL_CALL_PARSER": "mistral"}).tool_call_parser == "mistral"
    assert load_config(["--tool-call-parser", "llama3_json"], env={}).tool_call_parser == "llama3_json"
    with pytest.raises(SystemExit):
        load_config(["--tool-call-parser", "nope"], env={})


def test_one_parser_list_for_the_flag_the_detector_and_the_gateway() -> None:
    """config.TOOL_CALL_PARSERS is the only list: --tool-call-parser and detect_tool_support take its names (and
    auto), and it names exactly the gateway's parsers (apps/gateway/src/openai/tool-format.ts)."""
    assert TOOL_CALL_PARSER_CHOICES == ("auto", *TOOL_CALL_PARSERS)
    assert not hasattr(tool_template, "PARSERS")
    for name in TOOL_CALL_PARSER_CHOICES:
        assert load_config(["--tool-call-parser", name], env={}).tool_call_parser == name
    no_tools = _FakeTokenizer()  # every name passes the detector's own check; only hermes serves a plain template
    for name in TOOL_CALL_PARSERS:
        expected = nullcontext() if name == "hermes" else pytest.raises(ConfigError, match="does not render tools")
        with expected:
            detect_tool_support(no_tools, name)
    source = (Path(__file__).parents[3] / "apps/gateway/src/openai/tool-format.ts").read_text()
    found = re.search(r"TOOL_CALL_PARSERS = \[([^\]]*)\]", source)
    assert found is not None
    assert tuple(re.findall(r"'([^']+)'", found.group(1))) == TOOL_CALL_PARSERS


def test_config_imports_no_tool_template() -> None:
    """The list lives in config, which tool_template imports (ConfigError): config must not import it back."""
    code = "import sys, inlaid_worker.config; assert 'inlaid_worker.engine.tool_template' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


class _FakeTokenizer:
    """A chat template's tokenizer without transformers: one id per character, BOS (1) when special tokens are added;
    the template writes `<s>` (id 2) itself, as Llama's templates write their BOS."""

    def __init__(self, template: str = "x") -> None:
        self.chat_template = template

    def apply_chat_template(self, messages: list[dict[str, Any]], **_: Any) -> str:
        return "\x02" + "".join(m["content"] for m in messages)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


def test_encode_chat_adds_special_tokens_only_when_asked() -> None:
    """vLLM's chat default: the template holds the special tokens, the tokenizer adds none; True adds them on top."""
    tok = PromptTokenizer(_FakeTokenizer())
    messages = [{"role": "user", "content": "hi"}]
    assert tok.encode_chat(messages) == [2, ord("h"), ord("i")]
    assert tok.encode_chat(messages, add_special_tokens=True) == [1, 2, ord("h"), ord("i")]
    assert tok.encode_prompt("hi") == [1, ord("h"), ord("i")]


def test_chat_messages_carry_calls_as_objects_and_name_the_tool_result() -> None:
    msgs = chat_messages(history_protos())
    assert msgs[0] == {"role": "user", "content": "Weather in Paris?"}
    assert msgs[1]["tool_calls"] == [
        {"id": "a1b2c3d4e", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert msgs[2] == {"role": "tool", "content": "18C", "tool_call_id": "a1b2c3d4e", "name": "get_weather"}
    assert parse_tools("") is None
    assert parse_tools("[]") is None  # no tools offered: a template without tool support takes it
    assert parse_tools(json.dumps([WEATHER])) == [WEATHER]
    with pytest.raises(ValueError, match="JSON list"):
        parse_tools('{"a": 1}')


@pytest.mark.slow
def test_hermes_template_renders_tools_and_history(smollm2_hf: Any) -> None:
    text = render_history(smollm2_hf, HERMES_TEMPLATE)[1]
    assert f"<tools>{json.dumps(WEATHER)}</tools>" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        in text
    )
    assert "<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_llama_template_renders_parameters_and_ipython(smollm2_hf: Any) -> None:
    tok, text = render_history(smollm2_hf, LLAMA31_TEMPLATE)
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n18C<|eot_id|>" in text
    two = history_protos()[:2]
    two[1].tool_calls.calls.append(common_pb2.ToolCall(id="b", name="get_weather", arguments="{}"))
    with pytest.raises(PromptError, match="refused the tool-call conversation.*single tool-calls"):
        tok.encode_chat(chat_messages(two), [WEATHER])


@pytest.mark.slow
def test_template_without_tool_support_refuses_tool_fields(smollm2_hf: Any) -> None:
    tok = PromptTokenizer(smollm2_hf)
    with pytest.raises(PromptError, match="does not render tools"):
        tok.encode_chat([{"role": "user", "content": "hi"}], [WEATHER])
    with pytest.raises(PromptError, match="does not render tools"):
        tok.encode_chat(chat_messages(history_protos()))
    assert tok.encode_chat([{"role": "user", "content": "hi"}])  # plain chat unchanged


@pytest.mark.slow
def test_mistral_template_renders_the_call_list(smollm2_hf: Any) -> None:
    text = render_history(smollm2_hf, MISTRAL_TEMPLATE)[1]
    assert text == (
        '[INST]Weather in Paris?[/INST][TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]</s>'
        "[TOOL_RESULTS]18C[/TOOL_RESULTS]"
    )


@pytest.mark.slow
def test_newer_mistral_template_renders_each_call_after_its_markers(smollm2_hf: Any) -> None:
    text = render_history(smollm2_hf, MISTRAL_V11_TEMPLATE)[1]
    assert text == (
        '[INST]Weather in Paris?[/INST][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>[TOOL_RESULTS]18C[/TOOL_RESULTS]'
    )


@pytest.mark.slow
def test_pythonic_template_renders_the_call_list(smollm2_hf: Any) -> None:
    text = render_history(smollm2_hf, PYTHONIC_TEMPLATE)[1]
    assert "respond with a python list of the calls" in text
    assert '<|start_header_id|>assistant<|end_header_id|>\n\n[get_weather(city="Paris")]<|eot_id|>' in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_mistral_ids_are_nine_alphanumerics_and_match_between_call_and_result() -> None:
    call = common_pb2.ToolCall(id="call_0123456789abcdef01234567", name="get_weather", arguments="{}")
    protos = [
        common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call])),
        common_pb2.ChatMessage(role="tool", content="18C", tool_call_id=call.id),
    ]
    msgs = chat_messages(protos, short_ids=True)
    short = msgs[0]["tool_calls"][0]["id"]
    assert len(short) == 9 and short.isalnum() and msgs[1]["tool_call_id"] == short
    assert mistral_id("a1b2c3d4e") == "a1b2c3d4e"
    assert chat_messages(protos)[1]["tool_call_id"] == call.id  # other formats keep the ids


# a template that refuses a conversation with jinja's raise_exception, as Gemma's (system role) and Mistral's /
# Llama 2's (roles must alternate) do
_REFUSING_TEMPLATE = (
    "{%- for m in messages %}{%- if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{%- endif %}{{ m.role + ': ' + m.content + '\\n' }}{%- endfor %}"
)


@pytest.mark.slow
def test_a_template_refusing_a_plain_conversation_is_a_prompt_error(smollm2_hf: Any) -> None:
    """Bad input, not a server fault: Prepare and Tokenize answer PromptError with INVALID_ARGUMENT (RV1: it was
    re-raised as the template's TemplateError, gRPC UNKNOWN)."""
    tok = PromptTokenizer(with_template(smollm2_hf, _REFUSING_TEMPLATE))
    assert tok.encode_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(PromptError, match="chat template refused the conversation: System role not supported"):
        tok.encode_chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
