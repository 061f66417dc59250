"""Chat templates with tool support, written for the tests (minimal Qwen/Hermes-, Llama-3.1-, Mistral-style (older
and newer) and pythonic (Llama 3.2 / 4) ones, and a decoy that mentions tools but renders none), and a tool to
offer. No downloads."""

from __future__ import annotations

HERMES_TEMPLATE = """
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Return each call as <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'system' %}
{%- elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content }}
{%- for tc in m.tool_calls or [] %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def _llama_style(instruction: str, past_call: str) -> str:
    """A Llama-3-style template with tools (an ipython system header with `instruction` and the tools, tool results
    as ipython turns); `past_call`: how an assistant turn with tool calls renders, after its header."""
    return (
        "\n{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
        + instruction
        + "\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|eot_id|>\n{%- endif %}\n{%- for m in messages %}\n"
        + "{%- if m.role == 'assistant' and m.tool_calls %}"
        + past_call
        + """<|eot_id|>
{%- elif m.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""
    )


LLAMA31_TEMPLATE = _llama_style(
    'Respond with a JSON for a function call as {"name": function name, "parameters": dictionary of argument name and'
    " its value}.",
    """
{%- if m.tool_calls | length != 1 %}{{ raise_exception("This model only supports single tool-calls at once!") }}{% endif %}
<|start_header_id|>assistant<|end_header_id|>

{"name": "{{ m.tool_calls[0].function.name }}", "parameters": {{ m.tool_calls[0].function.arguments | tojson }}}""",
)

MISTRAL_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
    "[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]{% elif m.role == 'assistant' %}{% if m.tool_calls %}"
    '[TOOL_CALLS][{% for tc in m.tool_calls %}{"name": "{{ tc.function.name }}", "arguments": '
    "{{ tc.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]{% else %}{{ m.content }}"
    "{% endif %}</s>{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]{% endif %}{% endfor %}"
)

# Newer Mistral templates (tokenizer v11+: Mistral Small 3.1+, Devstral): each call as [TOOL_CALLS]name[ARGS]{...}.
MISTRAL_V11_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
    "[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]{% elif m.role == 'assistant' %}{% if m.tool_calls %}"
    "{% for tc in m.tool_calls %}[TOOL_CALLS]{{ tc.function.name }}[ARGS]{{ tc.function.arguments | tojson }}"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}</s>{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}"
    "[/TOOL_RESULTS]{% endif %}{% endfor %}"
)

# Pythonic calls (vLLM's Llama 3.2 / 4 pythonic templates): a past call as [name(key=value, ...)], values as JSON
# (Python literals for strings and numbers); Llama 3.2's pythonic template writes them with "%s" instead
# (PYTHONIC_PLAIN_TEMPLATE: [name(key=Paris)]).
PYTHONIC_TEMPLATE = _llama_style(
    "To call functions, respond with a python list of the calls: [func_name1(param=value), func_name2()]",
    """<|start_header_id|>assistant<|end_header_id|>

[{% for tc in m.tool_calls %}{{ tc.function.name }}({% for k, v in tc.function.arguments.items() %}{{ k }}={{ v | tojson }}
{%- if not loop.last %}, {% endif %}{% endfor %}){% if not loop.last %}, {% endif %}{% endfor %}]""",
)
PYTHONIC_PLAIN_TEMPLATE = PYTHONIC_TEMPLATE.replace("{{ v | tojson }}", '{{ "%s" | format(v) }}')

# Mentions tools (a comment and a variable test) but renders nothing of them: no tool support.
DECOY_TEMPLATE = (
    "{# tools and tool_calls are not supported #}{% if tools is defined %}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
