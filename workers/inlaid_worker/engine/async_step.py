"""Async scheduling (issue 4: the CPU never sets the pace): the engine launches step N+1 before it reads step N's
sampled tokens.

The synchronous step waits for the GPU at the end of every step (the sampled ids come to the host), then does the
host's work (detokenize, stop checks, outputs, the next schedule, the step's input) while the GPU sits idle. With
async scheduling (LLMEngine(async_scheduling=True), env INLAID_ASYNC_SCHEDULING) a step whose sampled rows are all
`row_ok` leaves its tokens on the device (device_sampler.launch_batch, or for all-greedy steps engine.greedy's one
kernel: GREEDY_COPY) with a non-blocking copy to pinned host memory (or the kernel's own store into it) and an event
(TokenCopies); the next engine.step() then schedules step N+1 at once (Scheduler.schedule_ahead), builds its input
with placeholders that the runner replaces on the device with step N's ids (model.token_feed; the fed decode rows are
the step's first rows), launches it, and only then waits for step N's tokens and post-processes them (the same
_append_token as the synchronous step) while the GPU runs step N+1. Step N+1 holds:
- a decode row for every running sequence that sampled in step N (its unread token, fed), but those that will end by
  length at that token (left out; a sequence that stops otherwise at step N, by EOS, a stop token or string or an
  abort, has its step N+1 token discarded: its KV write lands in its own last, never registered block, before any
  later step can reuse it, one stream);
- with async_admit (LLMEngine.async_admit, env INLAID_ASYNC_ADMIT, default on; session 11's first version had only
  the decode rows, and only when nothing waited), after them, under the rest of the token budget: the next chunk of
  every other running sequence (prefill continuations, tokens on the host) in running order, then admissions from the
  waiting queue with the scheduler's normal rules (budget, free blocks, max_num_seqs, max_loras, prefix-cache reuse
  and waiting for a shared prefix in computation). The sequences with an unread token stay counted (slots, blocks,
  adapters) until it is read; the adapters of step N's rows (finished ones too: step N still runs them) count as
  running for max_loras and are kept in their device slots (_assign_adapter_slots' held).
Step N+1 is not scheduled ahead (step N's tokens are read first, then the synchronous schedule(), which may preempt)
when the token budget does not cover the fed rows, or the free KV blocks do not cover the running sequences' chunks
(preemption never happens ahead); admissions stop where blocks run out. Without async_admit also when anything waits
or some running sequence did not sample in step N. Steps go ahead in a row: step N+1 may be launched ahead of step N
whose own input was fed from step N-1.

What is exact (the tokens, texts, finish reasons, logprobs and counts of each request equal the synchronous engine's
on the same schedule; with admissions ahead the schedule differs, a request joining one step later and beside other
rows, so only a batch-invariant model gives equal streams: the CPU tests' fp32 runner does for tokens, and its logprobs
agree to ~1e-6; on the GPU a row that stopped at step N still runs in step N+1, so that step's batch can take another
CUDA-graph bucket or kernel pick than the synchronous engine's, and fp16 rounding may then tip a near-tie):
- rows that leave their token on the device (row_ok): no grammar (xgrammar masks need the host's matcher state), no
  penalties (their histories need the unread token), no logprobs (they are read on the host), greedy or temperature
  >= ASYNC_MIN_TEMPERATURE (float32 logits / temperature cannot overflow then unless a logit is already +inf;
  sample_batch redoes overflowed rows in float64 on the host from the step's logits, which an async step no longer
  holds: such a row, possible only with +inf logits from the model, finishes with reason "error"); min_tokens and
  logit_bias are exact (the ban counts the unread token of a fed row); seeded rows draw their uniform from their own
  generator in the same order;
- a step launched ahead with a row that is not row_ok (an admission with a grammar, penalties, logprobs or prompt
  logprobs) keeps its logits: the host samples it after step N's tokens are read (at the next engine.step() call,
  async_pipeline's _finish_ahead), every row with its tokens known then, rows of sequences that finished at step N
  left out;
- prefix caching: a step's full blocks are registered at commit, after the tokens of its fed rows are read (never
  those of sequences that finished meanwhile); a base-weight swap or an adapter change reads the step in flight first,
  and blocks computed under older base weights are never registered (hash generation);
- outputs come one engine.step() later, at every step (engine/async_pipeline.py): each call launches one step (when
  there is work) and returns the outputs of the step the previous call launched, never waiting for the step it
  launched itself; a step whose rows the host samples (not all row_ok, or prompt logprobs) keeps its logits and is
  sampled at the start of the next call (so its predecessor's tokens never wait for it). Per request the stream is
  unchanged: an abort of a request whose token is not read (or sampled) yet reads it first (its token, then the
  abort); a request aborted mid-prefill while a step with its chunk runs frees its blocks at once (later steps are
  stream-ordered after that step's KV writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from inlaid_worker.cuda_alloc import pinned_pointer_ok
from inlaid_worker.engine.scheduler import SchedulerOutput
from inlaid_worker.engine.sequence import Sequence, SequenceStatus
from inlaid_worker.env_switch import env_switch

ASYNC_MIN_TEMPERATURE = 0.01  # |logit| <= 65504 (fp16) + 100 (bias): / 0.01 stays far below float32's max


def row_ok(seq: Sequence) -> bool:
    """Whether seq's sampled token may stay on the device until the next step has launched (module docstring)."""
    p = seq.sampling
    return (
        seq.grammar is None
        and p.logprobs is None
        and not p.has_penalties
        and (p.greedy or p.temperature >= ASYNC_MIN_TEMPERATURE)
    )


class PendingCopy:
    """A step's sampled ids and overflow flags [2, R] on their way to the host (read() waits for them)."""

    def __init__(self, host: torch.Tensor, event: Any) -> None:
        self.host, self.event = host, event

    def read(self) -> tuple[list[int], list[int]]:
        if self.event is not None:
            self.event.synchronize()
        tokens, flags = self.host.tolist()
        return tokens, flags


# How a step whose sampling rows are all plain greedy (greedy_only) gets its tokens (session 16, issue 4; benchmarks
# switch it): 0, device_sampler.launch_batch (torch's argmax, a zero overflow tensor, its cast, a stack of the two)
# and one copy of the stack to pinned host memory; 1, engine.greedy's one kernel for the device tokens, then one copy
# of them (the host zeroes the flags row); 2, that kernel also stores [tokens; zeros] into the pinned buffer through
# its unified address (no copy-engine transfer). Measured in bench/results/decode-2026-12-01-s16-b1.md.
# INLAID_GREEDY_KERNEL=0 takes mode 0 whatever this says. An engine reads greedy_mode() once, when it is built
# (AsyncPipeline.greedy_copy; benchmarks switching the mode on a live engine set that attribute).
GREEDY_COPY = 2
GREEDY_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # engine.greedy compares in float32: exact for these


def greedy_mode(env: Mapping[str, str] | None = None) -> int:
    """GREEDY_COPY as it applies (an engine reads it once, when it is built): 0 when INLAID_GREEDY_KERNEL=0; 1 instead
    of 2 where a kernel may not store through the pinned buffer's data_ptr() (cuda_alloc.pinned_pointer_ok: torch
    pins with cudaHostRegister, under either of its allocator setting names)."""
    if env_switch("INLAID_GREEDY_KERNEL", env) is False:
        return 0
    return GREEDY_COPY if pinned_pointer_ok(env) else min(GREEDY_COPY, 1)


def greedy_only(params: list[Any], banned: list[Any] | None) -> bool:
    """Every row greedy with nothing that moves its logits or reads them on the host (no bias, ban, penalties or
    logprobs): its token is the argmax of its logits and it cannot overflow."""
    from inlaid_worker.engine.device_sampler import plain_argmax  # (the sampler's own row classification)

    return plain_argmax(params, banned) and all(p.logprobs is None for p in params)


class TokenCopies:
    """Two pinned host buffers (and events) used in turn: a buffer is written again two launches later, after the
    step it carried was read (the engine reads step N before it launches step N+2)."""

    def __init__(self) -> None:
        self._bufs: list[torch.Tensor | None] = [None, None]
        self._events: list[Any] = [None, None]
        self._turn = 0

    def _next(self, r: int) -> tuple[torch.Tensor, Any]:
        """The next buffer's [2, r] view (pinned int64) and its event (made on first use)."""
        i, self._turn = self._turn, self._turn ^ 1
        if self._events[i] is None:
            self._events[i] = torch.cuda.Event()
        event = self._events[i]
        buf = self._bufs[i]
        if buf is None or buf.numel() < 2 * r:
            buf = self._bufs[i] = torch.empty(2 * max(r, 64), dtype=torch.int64, pin_memory=True)
        return buf[: 2 * r].view(2, r), event

    @torch.inference_mode()
    def start(self, tokens: torch.Tensor, overflow: torch.Tensor) -> PendingCopy:
        packed = torch.stack([tokens, overflow.long()])  # [2, R] int64 on the device
        if not packed.is_cuda:
            return PendingCopy(packed, None)
        host, event = self._next(int(packed.shape[1]))
        host.copy_(packed, non_blocking=True)
        event.record()
        return PendingCopy(host, event)

    @torch.inference_mode()
    def start_greedy(self, logits: torch.Tensor, rows: list[int] | None, mode: int) -> tuple[torch.Tensor, PendingCopy]:
        """The argmax tokens of `rows` of CUDA logits (None: every row; rows that greedy_only holds for) on the device
        and on their way to the host with zero overflow flags (GREEDY_COPY `mode` 1 or 2)."""
        from inlaid_worker.engine.greedy import greedy_tokens

        sel = None if rows is None else torch.tensor(rows, dtype=torch.int64).to(logits.device, non_blocking=True)
        r = int(logits.shape[0]) if rows is None else len(rows)
        host, event = self._next(r)
        if mode == 2:
            tokens = greedy_tokens(logits, sel, host=host.view(-1))
        else:
            tokens = greedy_tokens(logits, sel)
            host[1].zero_()  # (the host's own write: this buffer's last copy was read before this launch)
            host[0].copy_(tokens, non_blocking=True)
        event.record()
        return tokens, PendingCopy(host, event)


@dataclass
class InFlight:
    """A launched step whose sampled tokens the host has not read: its sampling rows in order (row_of: a sequence's
    row in `tokens`), the device tokens (the next step's feed) and their copy to the host."""

    seqs: list[Sequence]
    tokens: torch.Tensor
    copy: PendingCopy
    row_of: dict[Sequence, int] = field(init=False)

    def __post_init__(self) -> None:
        self.row_of = {s: j for j, s in enumerate(self.seqs)}


@dataclass(frozen=True)
class LaunchedAhead:
    """A launched step whose sampling the host has not done: its in-flight sampling (the device samples it), or its
    logits (None where the device samples) and prompt logprobs (model.prompt_logprobs.PromptLogprobs), which the host
    samples and collects at the next engine.step() call (async_pipeline)."""

    flight: InFlight | None
    logits: torch.Tensor | None
    scored: Any


def chain_rows(
    flight: InFlight, running: list[Sequence], max_model_len: int, strict: bool = True
) -> list[Sequence] | None:
    """The decode rows of the step to launch ahead of reading `flight`: every running row of the flight but those
    whose unread token ends them by length. strict: None when some running sequence is not a row (else those are
    left to the scheduler: prefill chunks)."""
    row_of = flight.row_of
    rows: list[Sequence] = []
    for seq in running:
        if seq not in row_of:
            if strict:
                return None
            continue
        n = len(seq.output_token_ids) + 1  # with the unread token
        if n >= seq.sampling.max_tokens or len(seq.prompt_token_ids) + n >= max_model_len:
            continue  # _append_token ends it at that token (LENGTH), if nothing earlier does
        rows.append(seq)
    return rows


def live_rows(out: SchedulerOutput) -> list[int]:
    """The rows (chunk indices) of out whose sequences still run."""
    return [i for i, c in enumerate(out.chunks) if c.seq.status is SequenceStatus.RUNNING]


def live(out: SchedulerOutput) -> SchedulerOutput:
    """out without the chunks of sequences that finished meanwhile (their blocks are freed: never register them)."""
    return SchedulerOutput([out.chunks[i] for i in live_rows(out)])
