"""Tool calling with the model's own chat template (vLLM's behaviour: `apply_chat_template(messages, tools=...)`).

`detect_tool_support` decides, once at start-up, whether the tokenizer's chat template renders tools itself and
in which call format, by rendering probe conversations (not by searching the template for a word):

- the template handles tools when a probe tool's name shows up in the rendering with `tools` and the rendering
  differs from the one without;
- the call format is read from how the template renders an assistant message's probe call: `<tool_call>` ->
  "hermes" (Hermes 2 Pro, Qwen2.5/3), `[TOOL_CALLS]` -> "mistral" (its JSON call list, or newer templates'
  `[TOOL_CALLS]name[ARGS]{...}`: the gateway's mistral parser reads both), a Python call list `[name(x=...)]` ->
  "pythonic" (Llama 3.2 / 4 pythonic templates), `{"name": ..., "parameters": ...}` or `<|python_tag|>` ->
  "llama3_json" (Llama 3.1+); a template whose history rendering raises is judged by the same markers in its
  source (the pythonic list, which only a rendering shows, aside). A template that handles tools in a format none
  of these parsers reads is treated as one without tool support (the gateway's Hermes rendering), unless
  --tool-call-parser names the parser.

`chat_messages` turns the gateway's messages (role, content, tool_calls, tool_call_id) into the dicts the
templates read: calls as `{"id", "type": "function", "function": {"name", "arguments": <object>}}`, a tool
message with the `name` of the call it answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inlaid_worker.config import TOOL_CALL_PARSER_CHOICES, TOOL_CALL_PARSERS, ConfigError

log = logging.getLogger(__name__)

PROBE_NAME = "inlaid_probe_fn"
PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": PROBE_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
    },
}
_PROBE_ID = "a1b2c3d4e"  # 9 alphanumerics: Mistral's templates refuse other ids
_PROBE_USER = {"role": "user", "content": "hi"}
_PROBE_HISTORY: list[dict[str, Any]] = [
    _PROBE_USER,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": _PROBE_ID, "type": "function", "function": {"name": PROBE_NAME, "arguments": {"x": "y"}}}
        ],
    },
    {"role": "tool", "tool_call_id": _PROBE_ID, "name": PROBE_NAME, "content": "ok"},
    {"role": "user", "content": "thanks"},
]


class ToolConfigError(ConfigError):
    """--tool-call-parser names a parser that this model's chat template cannot serve."""


@dataclass(frozen=True)
class ToolSupport:
    parser: str  # one of config.TOOL_CALL_PARSERS
    native: bool  # the chat template renders tools and tool-call history itself


HERMES_FALLBACK = ToolSupport("hermes", native=False)

# The markers a request with SamplingParams.keep_tool_markers keeps in its text where they are special tokens (the
# gateway's parsers find calls after them, also after prose: vLLM's mistral / pythonic parsers decode with
# skip_special_tokens=False); none for the other formats.
TOOL_MARKERS: dict[str, tuple[str, ...]] = {
    "mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"),
    "pythonic": ("<|python_start|>", "<|python_end|>", "<|python_tag|>"),
}


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str | None:
    try:
        out = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template may raise on a conversation it does not expect (jinja2 raise_exception)
        return None
    return out if isinstance(out, str) else None


_LLAMA_CALL = re.compile(r'"name"\s*:\s*"' + PROBE_NAME + r'"\s*,\s*"parameters"\s*:')
# the probe call as a Python call list: `[inlaid_probe_fn(x="y")]` (Llama 4), `[inlaid_probe_fn(x=y)]` (Llama 3.2's
# template writes values with "%s")
_PYTHONIC_CALL = re.compile(r"\[\s*" + PROBE_NAME + r"\(\s*x\s*=")


def _format_of(text: str, source: bool = False) -> str | None:
    """The format whose markers `text` (a rendering, or with `source` the template itself) holds."""
    if "<tool_call>" in text:
        return "hermes"
    if "[TOOL_CALLS]" in text:
        return "mistral"
    if _PYTHONIC_CALL.search(text):
        return "pythonic"
    if "<|python_tag|>" in text or _LLAMA_CALL.search(text) or (source and '"parameters": ' in text):
        return "llama3_json"
    return None


def detect_format(tokenizer: Any) -> str | None:
    """The call format of a template that handles tools (None: it does not, or in no format the gateway parses)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        return None
    with_tools = _render(tokenizer, [_PROBE_USER], [PROBE_TOOL])
    without = _render(tokenizer, [_PROBE_USER], None)
    if with_tools is None or PROBE_NAME not in with_tools or with_tools == without:
        return None
    history = _render(tokenizer, _PROBE_HISTORY, [PROBE_TOOL])
    fmt = None if history is None else _format_of(history)
    return fmt if fmt is not None else _format_of(template, source=True)


def detect_tool_support(tokenizer: Any, override: str = "auto") -> ToolSupport:
    """The tool support of the tokenizer's template; `override` ("auto" or a parser name) is --tool-call-parser."""
    if override not in TOOL_CALL_PARSER_CHOICES:
        raise ToolConfigError(
            f"--tool-call-parser must be auto or one of {', '.join(TOOL_CALL_PARSERS)}, got {override!r}"
        )
    fmt = detect_format(tokenizer)
    if override == "auto":
        if fmt is None:
            return HERMES_FALLBACK
        return ToolSupport(fmt, native=True)
    if fmt is None:
        if override != "hermes":
            raise ToolConfigError(
                f"--tool-call-parser {override}: this model's chat template does not render tools, so the gateway "
                "renders them in Hermes format; only hermes (or auto) can parse that"
            )
        return HERMES_FALLBACK
    if override != fmt:
        log.warning("--tool-call-parser %s overrides the %s format detected in the chat template", override, fmt)
    return ToolSupport(override, native=True)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: passed on as the text
        return text


def mistral_id(call_id: str) -> str:
    """A call id as Mistral's templates require (9 letters or digits; they raise on OpenAI's `call_...`), the same
    for a call and the tool message answering it. Ids that already fit are kept."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def chat_messages(messages: Iterable[Any], short_ids: bool = False) -> list[dict[str, Any]]:
    """Proto ChatMessages (role, content, tool_calls, tool_call_id) as the dicts chat templates read; `short_ids`
    rewrites call ids for Mistral's templates (mistral_id)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    ident = mistral_id if short_ids else str
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        calls = list(m.tool_calls.calls) if m.HasField("tool_calls") else []
        if calls:
            msg["tool_calls"] = [
                {
                    "id": ident(c.id),
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments(c.arguments)},
                }
                for c in calls
            ]
            names.update((c.id, c.name) for c in calls)
        if m.HasField("tool_call_id"):
            msg["tool_call_id"] = ident(m.tool_call_id)
            if m.tool_call_id in names:
                msg["name"] = names[m.tool_call_id]
        out.append(msg)
    return out


def parse_tools(text: str) -> list[dict[str, Any]] | None:
    """PrepareRequest.tools (JSON text of the OpenAI tools list) as apply_chat_template's `tools`; None if empty
    or an empty list (no tools offered, as templates read `tools: []`; so a template without tool support takes it)."""
    if not text:
        return None
    try:
        tools = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"tools is not JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("tools is not JSON: nested too deep") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValueError("tools must be a JSON list of tool objects")
    return tools or None
