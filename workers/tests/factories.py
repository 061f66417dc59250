"""Shared test factories: tiny random Llama checkpoints and random PEFT LoRA adapters, written to disk.

Nothing here downloads anything. `make_tiny_llama` writes a complete Hugging Face directory (config.json,
model.safetensors, tokenizer files with a ChatML chat template, generation_config.json) that both
transformers and the Inlaid runner load. Its tokenizer is byte-level BPE: ids 0..2 are the specials
`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (as in SmolLM2), then all 256 bytes, then merges learned from
a fixed corpus up to `vocab` (deterministic), so every model id decodes and multi-byte UTF-8 characters may
split across tokens. `make_random_adapter` builds a PEFT LoRA adapter with peft itself (get_peft_model +
save_pretrained) and fills lora_A AND lora_B with seeded random values, so the adapter changes outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Japan is Tokyo.",
    "Hello, world! How are you today? I am fine, thank you.",
    "def add(a, b):\n    return a + b\n",
    "Summarize the following text in one sentence. Translate to French: bonjour, merci, au revoir.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000. Question: what is 2 + 2? Answer: 4.",
    "Unicode: café, naïve, 日本語, emoji 🙂 and more text for the tokenizer to learn merges from.",
]


def make_tokenizer(vocab: int) -> Any:
    """A transformers fast tokenizer with exactly `vocab` ids (byte-level BPE, see module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    min_vocab = len(SPECIAL_TOKENS) + 256
    if vocab < min_vocab:
        raise ValueError(f"vocab must be >= {min_vocab} (specials + 256 bytes), got {vocab}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    missing = vocab - tok.get_vocab_size()
    if missing > 0:  # the corpus ran out of merges: fill the rest with reserved specials
        tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(missing)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
    )


def make_tiny_llama(
    path: str | Path,
    *,
    vocab: int = 320,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    max_positions: int = 256,
    tie_embeddings: bool = True,
    rope_scaling: dict[str, Any] | None = None,
    init_std: float = 0.1,
    seed: int = 0,
) -> Path:
    """Write a random LlamaForCausalLM directory at `path` and return it."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=rope_scaling,
        tie_word_embeddings=tie_embeddings,
        initializer_range=init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # RMSNorm weights start at 1; perturb them so a wrong norm placement shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, do_sample=False
    ).save_pretrained(out)
    return out


def make_random_adapter(
    path: str | Path,
    base_dir: str | Path,
    *,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    rslora: bool = False,
    seed: int = 0,
    init_std: float = 0.05,
) -> Path:
    """Write a PEFT LoRA adapter for the model at `base_dir` with seeded random, non-zero A and B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(path)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        use_rslora=rslora,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.copy_(init_std * torch.randn(p.shape, generator=gen))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def make_step(chunks: Sequence[tuple[Sequence[int], int, Sequence[int], int]], block_size: int) -> Any:
    """A StepInput from per-sequence chunks (new_token_ids, start_position, block_table, adapter_slot).

    Each chunk's tokens occupy positions start..start+len-1; its logits row is the chunk's last row.
    """
    from inlaid_worker.model.step_input import StepInput

    tokens, positions, adapters, slots, starts, ctx, logits_rows = [], [], [], [], [0], [], []
    max_blocks = max(len(c[2]) for c in chunks)
    tables = torch.zeros(len(chunks), max_blocks, dtype=torch.int64)
    for s, (new, start, table, adapter) in enumerate(chunks):
        for i, tok in enumerate(new):
            pos = start + i
            tokens.append(tok)
            positions.append(pos)
            adapters.append(adapter)
            slots.append(table[pos // block_size] * block_size + pos % block_size)
        starts.append(len(tokens))
        ctx.append(start + len(new))
        logits_rows.append(len(tokens) - 1)
        tables[s, : len(table)] = torch.tensor(list(table), dtype=torch.int64)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.int64)  # noqa: E731
    return StepInput(
        token_ids=as_long(tokens),
        positions=as_long(positions),
        adapter_ids=as_long(adapters),
        slot_mapping=as_long(slots),
        query_start_loc=as_long(starts),
        context_lens=as_long(ctx),
        block_tables=tables,
        logits_indices=as_long(logits_rows),
    )


def greedy_paged(
    runner: Any,
    prompts: Sequence[Sequence[int]],
    adapters: Sequence[int],
    max_new_tokens: int,
    *,
    chunk: int = 8,
    seed: int = 0,
) -> list[list[int]]:
    """Greedy-decode all prompts together through `runner.execute`, like a continuous-batching engine would.

    Sequence i joins at step i (so prefill chunks of `chunk` tokens mix with other sequences' decode rows);
    block tables are disjoint, shuffled block ids. Returns exactly `max_new_tokens` ids per prompt
    (no EOS stop).
    """
    bs = runner.block_size
    need = [-(-(len(p) + max_new_tokens) // bs) for p in prompts]
    if sum(need) > runner.num_kv_blocks:
        raise ValueError(f"need {sum(need)} KV blocks, runner has {runner.num_kv_blocks}")
    ids = torch.randperm(runner.num_kv_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
    tables = [ids[sum(need[:i]) : sum(need[: i + 1])] for i in range(len(prompts))]
    seqs = [list(p) for p in prompts]
    done = [0] * len(prompts)  # tokens already in the KV cache
    out: list[list[int]] = [[] for _ in prompts]
    step_no = 0
    while any(len(o) < max_new_tokens for o in out):
        chunks, owners = [], []
        for i in range(min(step_no + 1, len(prompts))):
            if len(out[i]) >= max_new_tokens:
                continue
            new = seqs[i][done[i] : done[i] + chunk]
            chunks.append((new, done[i], tables[i], adapters[i]))
            owners.append(i)
        logits = runner.execute(make_step(chunks, bs))
        for row, i in enumerate(owners):
            done[i] += len(chunks[row][0])
            if done[i] == len(seqs[i]):  # the chunk reached the end: its last row predicts the next token
                tok = int(logits[row].argmax())
                seqs[i].append(tok)
                out[i].append(tok)
        step_no += 1
    return out


def make_lora_adapter(
    config: Any, *, rank: int, targets: Sequence[str], seed: int = 0, alpha: float | None = None
) -> Any:
    """An in-memory LoraAdapter (no PEFT, no disk) with seeded random non-zero A and B for every layer;
    `config` is the runner's ModelConfig. Cheap enough to make hundreds."""
    from inlaid_worker.lora.adapter import LoraAdapter

    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(config.num_layers):
        for module in targets:
            out_f, in_f = config.linear_shape(module)
            a = torch.randn(rank, in_f, generator=gen) / in_f**0.5
            weights[(layer, module)] = (a, 0.05 * torch.randn(out_f, rank, generator=gen))
    alpha = float(2 * rank if alpha is None else alpha)
    return LoraAdapter(rank, alpha, alpha / rank, frozenset(targets), None, weights)


def interpreted_json(script: str, timeout: float = 120) -> Any:
    """Runs the Python source `script` in a subprocess under TRITON_INTERPRET=1 (Triton picks the interpreter at
    import), with the worker package on PYTHONPATH: its last stdout line, parsed as JSON. A failing script fails the
    caller's test with the tail of its stderr."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
