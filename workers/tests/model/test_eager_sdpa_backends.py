"""llama_fast's eager prefill chunks run SDPA without cuDNN's attention (EAGER_SDPA_BACKENDS: cuDNN builds a graph
per new (query, context) length pair, ~40 ms of host time per chunk on the H200) and still equal the torch reference
(attention.paged_attention_reference) for whole prompts and masked continuation chunks; the global SDPA flags are
left as they were."""

import torch
from inlaid_worker.model import llama_fast
from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference
from inlaid_worker.model.llama_fast import mixed_layout

BS, BLOCKS, KV_HEADS, HEADS, HD = 4, 24, 2, 4, 16


def _case():
    g = torch.Generator().manual_seed(0)
    k_cache = torch.randn(BLOCKS, BS, KV_HEADS, HD, generator=g)
    v_cache = torch.randn(BLOCKS, BS, KV_HEADS, HD, generator=g)
    # sequence 0: a whole 9-token prompt; sequence 1: tokens 7-12 of a 13-token context (a continuation chunk)
    query_start_loc, context_lens = [0, 9, 15], [9, 13]
    tables = torch.tensor([[5, 1, 17, 0], [3, 22, 8, 11]])
    q = torch.randn(15, HEADS, HD, generator=g)
    return q, k_cache, v_cache, query_start_loc, context_lens, tables


def test_eager_chunks_equal_the_reference():
    q, k_cache, v_cache, qsl, lens, tables = _case()
    layout = mixed_layout(qsl, lens, tables, BS)
    assert len(layout.prefills) == 2 and layout.decode_rows.numel() == 0
    got = llama_fast._attend(q, k_cache, v_cache, layout, HD**-0.5)
    meta = AttentionMetadata.build(torch.zeros(15, dtype=torch.int64), qsl, lens, tables, BS)
    want = paged_attention_reference(q, k_cache, v_cache, meta, HD**-0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_eager_chunks_leave_cudnn_out(monkeypatch):
    q, k_cache, v_cache, qsl, lens, tables = _case()
    layout = mixed_layout(qsl, lens, tables, BS)
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                     torch.backends.cuda.flash_sdp_enabled(), "is_causal" in kwargs))  # fmt: skip
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(llama_fast.F, "scaled_dot_product_attention", spy)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    llama_fast._attend(q, k_cache, v_cache, layout, HD**-0.5)
    assert seen == [(False, True, True, True), (False, True, True, False)]  # the whole prompt, then the masked chunk
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
