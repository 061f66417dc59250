"""ChatML prompts exactly as SmolLM2-135M-Instruct's chat template renders them (pure, no tokenizer needed).

A test checks `render_prompt` against the real tokenizer's `apply_chat_template`.
"""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


def render_prompt(user: str, system: str = DEFAULT_SYSTEM) -> str:
    """The prompt up to and including the assistant header; generation continues from here."""
    if not user.strip():
        raise ValueError("empty user message")
    return f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"


def render_answer(target: str) -> str:
    """The assistant turn's text after the header: what training puts the loss on."""
    return f"{target}{IM_END}"
