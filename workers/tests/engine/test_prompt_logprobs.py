"""Prompt logprobs (vLLM's prompt_logprobs) on the CPU: every prompt position's log_softmax of the raw logits, equal
to a plain transformers forward over the prompt, whole or in small chunks (chunked prefill), past a prefix-cache hit
(the request computes its prompt itself) and with the vocabulary-wide work split into blocks of rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import drain
from inlaid_worker.engine.engine import (
    MAX_PROMPT_LOGPROB_ENTRIES,
    LLMEngine,
    RequestError,
    check_prompt_logprobs_size,
)
from inlaid_worker.engine.factory import num_kv_blocks_for_budget
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import ScheduledChunk, SchedulerOutput
from inlaid_worker.engine.sequence import Sequence
from inlaid_worker.engine.step_builder import build_step_input
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.prompt_logprobs import PromptLogprobs, prompt_logprobs
from prompt_logprobs_case import PROMPT, TOP, check_against, engine, model_dir, params, prompt_entries, reference, run


def test_prompt_logprobs_equal_a_full_forward_whole_and_chunked(tmp_path: Path) -> None:
    model = model_dir(tmp_path)
    ref = reference(model, PROMPT)
    whole = prompt_entries(run(engine(model), PROMPT, params()))
    check_against(whole, ref, PROMPT, TOP, atol=1e-4)
    chunked_engine = engine(model, max_num_batched_tokens=7)  # 45 prompt tokens in 7 chunks
    chunked = prompt_entries(run(chunked_engine, PROMPT, params()))
    check_against(chunked, ref, PROMPT, TOP, atol=1e-4)
    assert chunked_engine.num_steps >= 7 + 2
    # the generated tokens are those of a request without prompt logprobs
    plain = run(engine(model), PROMPT, params(None))
    assert [o.token_ids for o in plain] == [o.token_ids for o in run(engine(model), PROMPT, params())]
    assert all(o.prompt_logprobs is None for o in plain)


def test_prefix_cache_hit_is_not_taken_by_a_prompt_logprobs_request(tmp_path: Path) -> None:
    model = model_dir(tmp_path)
    eng = engine(model, max_num_batched_tokens=16)
    run(eng, PROMPT, params(None), "warm")  # caches the prompt's 2 full blocks
    hit = run(eng, PROMPT, params(None), "hit")
    assert hit[0].cached_tokens == 32
    outs = run(eng, PROMPT, params(0), "scored")
    assert outs[0].cached_tokens == 0
    entries = prompt_entries(outs)
    check_against(entries, reference(model, PROMPT), PROMPT, 0, atol=1e-4)


def test_a_one_token_prompt_gets_only_the_first_entry(tmp_path: Path) -> None:
    entries = prompt_entries(run(engine(model_dir(tmp_path)), PROMPT[:1], params()))
    assert len(entries) == 1 and entries[0].rank is None and entries[0].token_id == PROMPT[0]


def test_step_input_scores_only_the_chunk_positions_still_missing() -> None:
    seq = Sequence("s", list(range(10, 30)), params())  # 20 prompt tokens
    seq.block_table = [0, 1]
    seq.prompt_logprobs_done = 4  # positions 0..3 scored before (a preempted run)
    plain = Sequence("p", list(range(40, 45)), params(None))
    plain.block_table = [2]
    step = build_step_input([ScheduledChunk(plain, 0, 5, True), ScheduledChunk(seq, 2, 18, False)], 16, "cpu")
    # seq's rows start at 5; positions 4..19 (of 2..19) are scored: targets are tokens 5..20, the last one none
    assert step.prompt_rows is not None and step.prompt_targets is not None
    assert step.prompt_rows.tolist() == list(range(5 + 2, 5 + 18 - 1))
    assert step.prompt_targets.tolist() == list(range(10 + 5, 30))
    assert step.prompt_top_k == TOP
    assert build_step_input([ScheduledChunk(plain, 0, 5, True)], 16, "cpu").prompt_rows is None


def test_row_blocks_give_the_one_block_result() -> None:
    torch.manual_seed(0)
    hidden, head = torch.randn(12, 16), torch.randn(50, 16)
    rows, targets = torch.tensor([0, 3, 4, 5, 9, 11]), torch.tensor([1, 7, 49, 0, 3, 3])
    one = prompt_logprobs(hidden, head, rows, targets, 4)
    blocks = prompt_logprobs(hidden, head, rows, targets, 4, max_block_bytes=50 * 4 * 2)  # 2 rows per block
    lp = torch.log_softmax(hidden[rows] @ head.T, dim=-1)
    assert torch.allclose(one.logprobs, lp[torch.arange(6), targets])
    assert one.ranks.tolist() == [int((r > r[t]).sum()) + 1 for r, t in zip(lp, targets, strict=True)]
    for a, b in zip(one.__dict__.values(), blocks.__dict__.values(), strict=True):
        assert torch.equal(a, b) if a.dtype == torch.int64 else torch.allclose(a, b, atol=1e-5)
    assert prompt_logprobs(hidden, head, rows, targets, 0).top_ids.shape == (6, 0)


def test_a_readmission_takes_cached_blocks_up_to_the_positions_it_scored(tmp_path: Path) -> None:
    """What a preempted request does: it scored positions 0..15 before, so it takes 1 cached block, not 2."""
    model = model_dir(tmp_path)
    eng = engine(model)
    run(eng, PROMPT, params(None), "warm")  # caches the prompt's 2 full blocks
    eng.add_request("again", PROMPT, params())
    eng._seqs["again"].prompt_logprobs_done = 16  # as if preempted after scoring them
    outs = drain(eng)["again"]
    assert outs[0].cached_tokens == 16
    entries = prompt_entries(outs)
    assert len(entries) == 1 + len(PROMPT) - 1 - 16  # the first token, then positions 16.. (the rest were sent)
    ref = reference(model, PROMPT)
    for p, e in enumerate(entries[1:], start=16):
        assert e.token_id == PROMPT[p + 1] and abs(e.logprob - float(ref[p, PROMPT[p + 1]])) < 1e-4


def test_real_preemptions_mid_prompt_keep_every_position_once(tmp_path: Path) -> None:
    """KV pressure preempts the scoring request mid-prompt, again and again (5 KV blocks, 8-token chunks, an older
    request growing by a block): it resumes scoring where it stopped, each position once, and matches the reference
    (the readmission test above only sets prompt_logprobs_done by hand). Without the prefix cache it passed too (RV1)."""
    model = model_dir(tmp_path)
    per_block = (1 << 20) // num_kv_blocks_for_budget(load_model_config(model), 16, torch.float32, 1 << 20)
    eng = engine(model, max_num_batched_tokens=8, kv_cache_bytes=per_block * 5, max_model_len=80)
    assert eng.limits.num_kv_blocks == 5
    eng.add_request("older", (PROMPT * 2)[:47], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    eng.step()
    eng.add_request("scored", PROMPT, params())
    seq = eng._seqs["scored"]
    outs = drain(eng)
    assert seq.num_preemptions >= 1
    check_against(prompt_entries(outs["scored"]), reference(model, PROMPT), PROMPT, TOP, atol=1e-4)


def test_too_many_prompt_logprob_entries_is_a_request_error() -> None:
    check_prompt_logprobs_size(10**9, None)  # not asked: any length
    check_prompt_logprobs_size(MAX_PROMPT_LOGPROB_ENTRIES // 21, 20)  # at the bound
    with pytest.raises(RequestError, match="prompt_logprobs: 20 on a 50000-token prompt"):
        check_prompt_logprobs_size(50_000, 20)  # ~26 MB in one message: refused before it is queued


def test_collect_refuses_a_row_count_the_chunks_do_not_need() -> None:
    def scored(rows: int) -> PromptLogprobs:
        return PromptLogprobs(torch.zeros(rows), torch.ones(rows, dtype=torch.int64),
                              torch.zeros(rows, 1, dtype=torch.int64), torch.zeros(rows, 1))  # fmt: skip

    seq = Sequence("s", list(range(10, 20)), params())  # 10 prompt tokens: a chunk 0..6 scores positions 0..5
    LLMEngine._collect_prompt_logprobs(SchedulerOutput([ScheduledChunk(seq, 0, 6, False)]), scored(6))
    assert len(seq.prompt_logprobs_pending) == 6 and seq.prompt_logprobs_done == 6
    seq2 = Sequence("t", list(range(10, 20)), params())
    with pytest.raises(RuntimeError, match="scored 7 prompt rows, the step's chunks need 6"):
        LLMEngine._collect_prompt_logprobs(SchedulerOutput([ScheduledChunk(seq2, 0, 6, False)]), scored(7))
