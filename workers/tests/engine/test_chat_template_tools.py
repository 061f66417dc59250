"""SmolLM2-135M-Instruct's chat template with the gateway's Hermes tool rendering (apps/gateway/src/openai/
tool-prompt.ts): the template (ChatML) has no tool support, so tools arrive as plain system / user / assistant
content. It must carry them verbatim, add no default system prompt in front of the tools system message, and
tokenize `<tool_call>` as ordinary text (the gateway finds the tags in the decoded output)."""

from __future__ import annotations

import pytest
from inlaid_worker.engine.tokenizer import PromptTokenizer
from inlaid_worker.model.smollm2 import ensure_smollm2

TOOLS_SYSTEM = (
    "# Tools\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}\n</tools>'
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
RESULT = "<tool_response>\n18C\n</tool_response>"


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer.from_model_dir(ensure_smollm2())


@pytest.mark.slow
def test_template_has_no_tool_support(tok: PromptTokenizer) -> None:
    assert "tools" not in tok.hf.chat_template
    assert "tool_calls" not in tok.hf.chat_template


@pytest.mark.slow
def test_hermes_messages_render_verbatim_as_chatml(tok: PromptTokenizer) -> None:
    messages = [
        {"role": "system", "content": TOOLS_SYSTEM},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": CALL},
        {"role": "user", "content": RESULT},
    ]
    text = tok.hf.decode(tok.encode_chat(messages), skip_special_tokens=False)
    assert text == (
        f"<|im_start|>system\n{TOOLS_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        f"<|im_start|>assistant\n{CALL}<|im_end|>\n"
        f"<|im_start|>user\n{RESULT}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "SmolLM" not in text  # the default system prompt only comes when there is no system message


@pytest.mark.slow
def test_tool_call_tags_are_plain_text(tok: PromptTokenizer) -> None:
    ids = tok.encode_prompt(CALL)
    assert tok.decode(ids) == CALL
    special = set(tok.hf.all_special_ids)
    assert not special.intersection(ids)
