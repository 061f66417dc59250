"""engine.greedy's one-kernel argmax (the async loop's all-greedy steps, async_step.GREEDY_COPY): torch.argmax's
tokens exactly (the first maximum; a NaN wins, the first one; an all -inf row gives 0; float16 compared widened), over
chunked vocabularies and a row selection, under Triton's interpreter on the CPU (a subprocess: the interpreter is
chosen at import); on CUDA also the pinned host buffer it stores into and TokenCopies.start_greedy's two modes; which
rows greedy_only lets through. (An engine reading the greedy mode once, when it is built:
test_greedy_copy_honoured.)"""

from __future__ import annotations

import pytest
import torch
from factories import interpreted_json
from inlaid_worker.engine.async_step import TokenCopies, greedy_only
from inlaid_worker.engine.sampling_params import SamplingParams

SCRIPT = r"""
import json, torch
from inlaid_worker.engine.greedy import greedy_tokens
torch.manual_seed(0)
res = []
for v, block in ((7, 4), (300, 64)):
    x = torch.randn(5, v)
    x[1] = float("-inf")
    x[2, 1] = x[2, v - 2] = 1e9
    x[3, v - 1] = float("nan"); x[3, 2] = float("inf")
    x[4, v - 1] = float("nan"); x[4, 3] = float("nan")
    for dt in (torch.float32, torch.float16):
        xx = x.to(dt)
        sel = torch.tensor([4, 0, 3], dtype=torch.int64)
        res.append(dict(v=v, dt=str(dt), ref=xx.float().argmax(-1).tolist(), got=greedy_tokens(xx, block=block).tolist(),
                        ref_sel=xx.float().argmax(-1)[sel].tolist(), got_sel=greedy_tokens(xx, sel, block=block).tolist()))
print(json.dumps(res))
"""


def test_kernel_is_torch_argmax_under_the_interpreter() -> None:
    cases = interpreted_json(SCRIPT)
    assert len(cases) == 4
    for c in cases:
        assert c["got"] == c["ref"] and c["got_sel"] == c["ref_sel"], c
        # the cases that tell the rules apart: the tie's first index, the first NaN over +inf, an all -inf row
        v = c["v"]
        assert c["ref"][1] == 0 and c["ref"][2] == 1 and c["ref"][3] == v - 1 and c["ref"][4] == 3, c


def test_greedy_only_rows() -> None:
    greedy = SamplingParams(temperature=0, max_tokens=4)
    assert greedy_only([greedy, greedy], None) and greedy_only([greedy], [None])
    assert not greedy_only([greedy, SamplingParams(temperature=0.8, seed=1)], None)
    assert not greedy_only([SamplingParams(temperature=0, logit_bias=((3, 1.0),))], None)
    assert not greedy_only([SamplingParams(temperature=0, repetition_penalty=1.2)], None)
    assert not greedy_only([SamplingParams(temperature=0, logprobs=2)], None)
    assert not greedy_only([greedy], [(2,)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("vocab", [32000, 128256])
def test_gpu_tokens_host_buffer_and_both_copy_modes(vocab: int) -> None:
    from inlaid_worker.engine.greedy import greedy_tokens

    gen = torch.Generator(device="cuda").manual_seed(1)
    for r in (1, 3, 8):
        x = torch.randn(r, vocab, device="cuda", generator=gen)
        x[0, 5] = x[0, vocab - 7] = 1e9
        if r > 1:
            x[1] = float("-inf")
        if r > 2:
            x[2, 9], x[2, vocab - 2] = float("inf"), float("nan")
        ref = x.argmax(dim=-1)
        host = torch.full((2 * r,), -1, dtype=torch.int64, pin_memory=True)
        tok = greedy_tokens(x, host=host)
        torch.cuda.synchronize()
        assert torch.equal(tok, ref) and host.tolist() == ref.tolist() + [0] * r
        sel = [r - 1 - i for i in range(r)]
        copies = TokenCopies()
        for mode in (1, 2, 1, 2):  # the two buffers in turn
            tokens, pending = copies.start_greedy(x, sel if mode == 2 else None, mode)
            want = ref[sel] if mode == 2 else ref
            assert torch.equal(tokens, want)
            assert pending.read() == (want.tolist(), [0] * r)


def test_the_one_kernel_path_is_shipped() -> None:
    """Session 16 measured GREEDY_COPY 2 faster than the old path (0) in the engine's async loop on the H200, 7B int4
    (bench/results/decode-2026-12-01-s16-b1.md: batch 1 1.5259 -> 1.5051 ms/step, batch 4 2.1723 -> 2.1510, every
    round lower), so it is the default; 1 (the kernel, then a copy) sat between them."""
    from inlaid_worker.engine import async_step

    assert async_step.GREEDY_COPY == 2


def test_greedy_mode_switch_and_host_register_fallback() -> None:
    from inlaid_worker.engine import async_step

    assert async_step.greedy_mode({}) == async_step.GREEDY_COPY == 2
    assert async_step.greedy_mode({"INLAID_GREEDY_KERNEL": "0"}) == 0
    assert async_step.greedy_mode({"INLAID_GREEDY_KERNEL": "1"}) == 2
    # cudaHostRegister'd pinned memory: the kernel must not store through the host pointer (mode 1: kernel + copy)
    conf = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True, pinned_use_cuda_host_register:True"}
    assert async_step.greedy_mode(conf) == 1
    with pytest.raises(ValueError, match="INLAID_GREEDY_KERNEL"):
        async_step.greedy_mode({"INLAID_GREEDY_KERNEL": "maybe"})


def test_float64_logits_are_refused() -> None:
    """Compared in float32, float64 would narrow (1.0 vs 1.0 + 1e-12 tie): refused before any launch."""
    from inlaid_worker.engine.greedy import greedy_tokens

    with pytest.raises(ValueError, match="float16 / bfloat16 / float32"):
        greedy_tokens(torch.zeros(1, 8, dtype=torch.float64))
