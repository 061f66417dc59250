"""The engine's per-token and per-step host code as it was before session 10's engine host work (a43e3e1),
kept verbatim (as functions) so that test_engine_host_equivalence.py can run an engine on it and compare today's
outputs with it step by step: LLMEngine._append_token, Scheduler._schedule_running and Scheduler.commit. The step
builder's and the detokenizer's references are test_step_builder.reference_build and detokenizer_reference."""

# ruff: noqa: ANN001, ANN201, ANN202

from __future__ import annotations

from dataclasses import replace

from inlaid_worker.engine.engine import RequestOutput
from inlaid_worker.engine.sampler import TokenLogprobs
from inlaid_worker.engine.scheduler import SchedulerOutput
from inlaid_worker.engine.sequence import FinishReason, Sequence, SequenceStatus


def _append_token(self, seq: Sequence, token: int, logprobs: TokenLogprobs | None = None) -> RequestOutput:
    seq.output_token_ids.append(token)
    p = seq.sampling
    detok = seq.detokenizer
    if detok is None:
        raise RuntimeError(f"{seq.request_id} has no detokenizer")
    reason: FinishReason | None = None
    # a grammar ends with EOS (the mask allows it only where the grammar can end), ignore_eos or not
    ended = seq.grammar is not None and self._grammar_ended(seq, token)
    if ended or token in p.stop_token_ids or (not p.ignore_eos and token in self.eos_token_ids):
        reason, text = FinishReason.STOP, detok.flush()  # a stop token's text is never emitted
    else:
        text = detok.add([token])
        if detok.stopped:
            reason = FinishReason.STOP
        elif len(seq.output_token_ids) >= p.max_tokens or seq.num_tokens >= self.limits.max_model_len:
            reason = FinishReason.LENGTH
            text += detok.flush()
        elif seq.grammar is not None and seq.grammar.too_slow:  # its mask would slow every row of the worker
            reason = FinishReason.ERROR
            text += detok.flush()
    if reason is not None:
        self.scheduler.finish(seq, reason)
        del self._seqs[seq.request_id]
    out = self._output(seq, text, [token], reason, None if logprobs is None else (logprobs,))
    prompt = self._take_prompt_logprobs(seq)
    return out if prompt is None else replace(out, prompt_logprobs=prompt)


def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
    bm = self.block_manager
    room = bm.block_size
    i = 0
    while i < len(self.running) and budget > 0:
        seq = self.running[i]
        n = min(seq.num_uncomputed_tokens, budget)
        reach = seq.num_computed_tokens + n
        if len(seq.block_table) * room < reach:  # needs new blocks (most decode steps do not)
            while not bm.can_allocate(seq.block_table, reach):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break  # seq preempted itself: nothing newer is left running
            bm.allocate(seq.block_table, reach)
        out.chunks.append(self._chunk(seq, n))
        budget -= n
        i += 1
    return budget


def commit(self, out: SchedulerOutput) -> None:
    """Marks the scheduled chunks as computed (their KV is now in the cache) and registers the full blocks
    they completed in the prefix cache."""
    caching = self.block_manager.enable_caching
    for chunk in out.chunks:
        chunk.seq.num_computed_tokens = chunk.end
        if caching:
            self._register(chunk.seq)
