"""The transformers + PEFT baseline: the same random-weight Llama shape, `generate(adapter_names=...)` with
one adapter per row (mixed-batch LoRA inference), greedy, fixed output length.

Decode step time = (time for 1 + N new tokens - time for 1 new token) / N; prefill tokens/s = rows * prompt
tokens / time for 1 new token.
"""

from __future__ import annotations

import time

import torch
from random_model import TARGETS, Shape


def build_peft_model(shape: Shape, rank: int, targets: str, distinct: int, device: torch.device, dtype: torch.dtype):  # type: ignore[no-untyped-def]  # noqa: E501
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab, max_position_embeddings=4096,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the serving dtype directly (no fp32 copy of 7B)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    if distinct == 0:
        return model
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS[targets]), lora_dropout=0.0,
                      init_lora_weights=False)  # fmt: skip
    model = get_peft_model(model, lora, adapter_name="a0")
    for i in range(1, distinct):
        model.add_adapter(f"a{i}", lora)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generate(model, batch: int, distinct: int, prompt: int, new: int, device: torch.device, reps: int) -> float:  # type: ignore[no-untyped-def]  # noqa: E501
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device=device)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  pad_token_id=0)  # fmt: skip
    if distinct:
        kwargs["adapter_names"] = [f"a{i % distinct}" for i in range(batch)]
    times = []
    with torch.inference_mode():
        for _ in range(reps + 1):  # the first call warms up
            _sync(device)
            t0 = time.perf_counter()
            model.generate(input_ids=ids, **kwargs)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def peft_point(
    shape: Shape, batch: int, distinct: int, rank: int, targets: str, prompt: int, new: int,
    device: torch.device, dtype: torch.dtype, reps: int,
) -> dict:  # fmt: skip
    model = build_peft_model(shape, rank, targets, distinct, device, dtype)
    t1 = time_generate(model, batch, distinct, prompt, 1, device, reps)
    tn = time_generate(model, batch, distinct, prompt, 1 + new, device, reps)
    step = max(tn - t1, 1e-9) / new
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(kind="peft", batch=batch, distinct=distinct, rank=rank if distinct else 0,
                targets=targets if distinct else "-", prompt=prompt, step_ms=step * 1e3, tokens_per_s=batch / step,
                prefill_tokens_per_s=batch * prompt / t1)  # fmt: skip
