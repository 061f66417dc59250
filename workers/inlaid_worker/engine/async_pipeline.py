"""LLMEngine's async scheduling steps (the rules and the pieces: engine/async_step.py), a mixin of LLMEngine: engine.step()
calls _advance() first and, after a synchronous launch, _defer().

With async scheduling each step() call launches one step (when there is work) and returns the outputs of the step the
previous call launched, never waiting for the step it launched itself:
- the previous launch left its tokens on the device (_inflight): the next step goes ahead of reading them where it can
  (_schedule_ahead, _launch_ahead), then they are read (_resolve); else they are read and step() schedules as usual;
- the previous launch kept its logits (_unfinished: a row the host samples, or prompt logprobs): the host samples it
  (_finish_ahead) and step() schedules as usual;
- a synchronous launch (_defer) leaves its tokens on the device where every sampling row may, else keeps its logits
  for the next call: step N's outputs never wait for step N+1 (a streaming client gets each token at the call after
  its step, as from the synchronous engine one call later).
Adapter loads and removals, base-weight swaps and aborts of a row with an unread token read what is in flight first
(_settle); after async is switched off the next step() still reads it. A failed step() leaves nothing in flight (the
caller fails what was running); a failed _settle, outside step(), ends the rows whose tokens it lost with reason
"error" at once and raises.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import TYPE_CHECKING, Any

import torch

from inlaid_worker.engine.async_step import (
    GREEDY_DTYPES,
    InFlight,
    LaunchedAhead,
    TokenCopies,
    chain_rows,
    greedy_mode,
    greedy_only,
    live,
    live_rows,
    row_ok,
)
from inlaid_worker.engine.device_sampler import launch_batch
from inlaid_worker.engine.sampler import min_tokens_ban
from inlaid_worker.engine.scheduler import AheadPlan, Scheduler, SchedulerOutput
from inlaid_worker.engine.sequence import Sequence, SequenceStatus
from inlaid_worker.engine.step_builder import build_step_input
from inlaid_worker.model.token_feed import make_feed

if TYPE_CHECKING:
    from inlaid_worker.engine.engine import EngineLimits, RequestOutput
    from inlaid_worker.model.step_input import StepInput


class AsyncPipeline:
    if TYPE_CHECKING:  # LLMEngine's
        runner: Any
        scheduler: Scheduler
        limits: EngineLimits
        eos_token_ids: set[int]
        async_admit: bool
        num_steps: int
        _async: bool
        _pending: list[RequestOutput]

        def _assign_adapter_slots(self, scheduled: SchedulerOutput, held: Iterable[str] = ()) -> None: ...
        def _postprocess(self, scheduled: SchedulerOutput, logits: torch.Tensor,
                         into: list[RequestOutput] | None = None,
                         logit_rows: list[int] | None = None) -> list[RequestOutput]: ...  # fmt: skip
        def _run_model(self, step: StepInput) -> tuple[torch.Tensor, Any]: ...
        def _collect_prompt_logprobs(self, scheduled: SchedulerOutput, scored: Any) -> None: ...
        def _append_token(self, seq: Sequence, token: int) -> RequestOutput: ...
        def _fail(self, seq: Sequence) -> RequestOutput: ...

    def _init_async(self) -> None:
        self._inflight: InFlight | None = None  # the launched step whose tokens are on the device, not read yet
        self._unfinished: tuple[SchedulerOutput, LaunchedAhead] | None = None  # a launched step the host samples
        self._copies = TokenCopies()
        self.num_async_steps = 0  # steps launched ahead of reading the previous one's tokens
        self.num_async_admit_steps = 0  # of those, steps with prefill chunks (admissions or continuations)
        # how all-greedy steps get their tokens (async_step.GREEDY_COPY): read once here, not at every step (env
        # INLAID_GREEDY_KERNEL, PYTORCH_CUDA_ALLOC_CONF); benchmarks may set it between steps
        self.greedy_copy = greedy_mode()

    @property
    def _launched(self) -> bool:
        """A launched step's outputs are not out yet."""
        return self._inflight is not None or self._unfinished is not None

    def _unread(self, seq: Sequence) -> bool:
        """seq's token of the last launched step is not read (or sampled) yet."""
        if self._inflight is not None:
            return seq in self._inflight.row_of
        if self._unfinished is not None:
            return any(c.seq is seq and c.samples for c in self._unfinished[0].chunks)
        return False

    def _advance(self, outputs: list[RequestOutput]) -> bool:
        """The start of step(): appends the previous launch's outputs to `outputs`, launching the next step ahead of
        reading its tokens where it can. True: a step was launched here (step() returns); False: step() schedules."""
        flight, self._inflight = self._inflight, None
        unfinished, self._unfinished = self._unfinished, None
        try:
            if unfinished is not None:
                self._finish_ahead(*unfinished, outputs)
                return False
            if flight is None:
                return False
            ahead = self._schedule_ahead(flight) if self._async else None
            if ahead is None:
                self._resolve(flight, None, outputs)
                return False
            launched = self._launch_ahead(ahead, flight)
            self._inflight = launched.flight
            if launched.logits is not None:
                self._unfinished = (ahead, launched)
            self._resolve(flight, ahead, outputs)
            return True
        except BaseException:  # no step stays in flight after a failure (the caller aborts what was running)
            self._inflight = self._unfinished = None
            raise

    def _defer(self, scheduled: SchedulerOutput, logits: torch.Tensor, scored: Any) -> None:
        """After a synchronous launch (committed): its sampling on the device where every sampling row may, else its
        logits (and prompt logprobs) kept for the next step() call."""
        if scored is None and self._deferrable(scheduled):
            self._inflight = self._launch_sampling(scheduled, logits)
        elif scored is not None or any(c.samples for c in scheduled.chunks):
            self._unfinished = (scheduled, LaunchedAhead(None, logits, scored))

    @staticmethod
    def _deferrable(scheduled: SchedulerOutput) -> bool:
        """Every sampling row of the step may leave its token on the device (and at least one samples)."""
        rows = [c.seq for c in scheduled.chunks if c.samples]
        return bool(rows) and all(row_ok(s) for s in rows)

    def _schedule_ahead(self, flight: InFlight) -> SchedulerOutput | None:
        """The step to launch before reading `flight`'s tokens, or None (read them, then step as usual): the decode
        rows of `flight` that go on, fed; with async_admit also prefill chunks and admissions (async_step.py)."""
        sch = self.scheduler
        extend = self.async_admit
        if not sch.running or (sch.waiting and not extend):
            return None
        rows = chain_rows(flight, sch.running, self.limits.max_model_len, strict=not extend)
        if rows is None or not (rows or extend):
            return None
        held = frozenset(s.adapter for s in flight.seqs if s.adapter is not None) if extend else frozenset()
        return sch.schedule_ahead(AheadPlan(rows, flight.row_of, extend, held))

    def _launch_ahead(self, ahead: SchedulerOutput, flight: InFlight) -> LaunchedAhead:
        """Runs `ahead` with its fed rows' input tokens taken on the device from `flight`; leaves its tokens there
        too where every sampling row may (else its logits wait for _finish_ahead)."""
        row_of = flight.row_of
        fed: list[int] = []  # the fed rows come first (schedule_ahead): their rows in flight.tokens
        for chunk in ahead.chunks:
            if chunk.seq not in row_of:
                break
            fed.append(row_of[chunk.seq])
        self._assign_adapter_slots(ahead, (s.adapter for s in flight.seqs if s.adapter is not None))
        feed = make_feed(flight.tokens, fed) if fed else None
        logits, scored = self._run_model(build_step_input(ahead.chunks, self.limits.block_size, "cpu", feed))
        for chunk in ahead.chunks:  # computed; commit() registers their blocks once the fed tokens are read (_resolve)
            chunk.seq.num_computed_tokens = chunk.end
        self.num_steps += 1
        self.num_async_steps += 1
        if len(fed) < len(ahead.chunks):
            self.num_async_admit_steps += 1
        if scored is None and self._deferrable(ahead):
            return LaunchedAhead(self._launch_sampling(ahead, logits, row_of), None, None)
        return LaunchedAhead(None, logits, scored)

    def _finish_ahead(self, ahead: SchedulerOutput, launched: LaunchedAhead, into: list[RequestOutput]) -> None:
        """After `ahead`'s fed tokens were read: its prompt logprobs, then the synchronous sampling of a step that
        could not leave its tokens on the device (a row with a grammar, penalties, logprobs...: the host samples it
        now, with the fed tokens known), its rows of sequences that finished meanwhile left out. The outputs are
        appended to `into` one by one (kept when a later row fails)."""
        logits = launched.logits
        assert logits is not None, "_unfinished always keeps its logits"
        if launched.scored is not None:
            self._collect_prompt_logprobs(ahead, launched.scored)
        keep = live_rows(ahead)  # = live(ahead)'s chunks, in one pass
        kept = SchedulerOutput([ahead.chunks[i] for i in keep])
        self._postprocess(kept, logits, into, None if len(keep) == logits.shape[0] else keep)  # read in place

    def _launch_sampling(
        self, scheduled: SchedulerOutput, logits: torch.Tensor, unread: Container[Sequence] = ()
    ) -> InFlight:
        """Queues the sampling of the step's sampling rows (all row_ok) and the copy of their tokens to the host.
        unread: the rows whose output lacks one sampled token the host has not read yet (min_tokens counts it)."""
        rows = [i for i, c in enumerate(scheduled.chunks) if c.samples]
        seqs = [scheduled.chunks[i].seq for i in rows]
        params = [s.sampling for s in seqs]
        banned = None
        if any(p.min_tokens for p in params):
            eos = self.eos_token_ids
            banned = [min_tokens_ban(s.sampling, s.resumed_output_tokens + len(s.output_token_ids) + (s in unread), eos)
                      for s in seqs]  # fmt: skip
        picked = None if len(rows) == logits.shape[0] else rows  # read in place: no copy of the sampling rows
        mode = self.greedy_copy
        if mode and logits.is_cuda and logits.dtype in GREEDY_DTYPES and logits.dim() == 2 and logits.stride(1) == 1 \
                and greedy_only(params, banned):  # fmt: skip
            tokens, copy = self._copies.start_greedy(logits, picked, mode)  # one kernel (async_step.GREEDY_COPY)
            return InFlight(seqs, tokens, copy)
        tokens, overflow = launch_batch(logits, params, [s.generator for s in seqs], banned, rows=picked)
        return InFlight(seqs, tokens, self._copies.start(tokens, overflow))

    def _resolve(self, flight: InFlight, ahead: SchedulerOutput | None, outputs: list[RequestOutput]) -> None:
        """Reads `flight`'s tokens and post-processes them into `outputs` (sequences finished meanwhile: discarded);
        then commits `ahead` (launched on those tokens) for the sequences still running."""
        tokens, flags = flight.copy.read()
        running = SequenceStatus.RUNNING
        for j, seq in enumerate(flight.seqs):
            if seq.status is not running:
                continue
            if flags[j]:  # overflowed: possible only with +inf logits (async_step's docstring)
                outputs.append(self._fail(seq))
                continue
            outputs.append(self._append_token(seq, tokens[j]))
        if ahead is not None:
            self.scheduler.commit(live(ahead))

    def _settle(self) -> None:
        """Reads the step in flight now, or samples the one launched with its logits kept (its outputs go out at the
        start of the next step() call). When that fails (a device fault shows first at the read), the step's rows
        that still run and got no output end with reason "error" (their outputs queued the same way; their blocks
        freed), nothing stays in flight, and the error is raised: the engine goes on with the other requests."""
        flight, self._inflight = self._inflight, None
        unfinished, self._unfinished = self._unfinished, None
        outputs: list[RequestOutput] = []
        try:
            if flight is not None:
                self._resolve(flight, None, outputs)
            elif unfinished is not None:
                self._finish_ahead(*unfinished, outputs)
        except Exception:
            if flight is not None:
                rows = flight.seqs
            else:  # its sampling rows, and those whose prompt logprobs it held
                chunks = unfinished[0].chunks if unfinished is not None else []
                rows = [c.seq for c in chunks if c.samples or c.seq.sampling.prompt_logprobs is not None]
            done = {o.request_id for o in outputs}
            for seq in rows:
                if seq.status is SequenceStatus.RUNNING and seq.request_id not in done:
                    outputs.append(self._fail(seq))
            raise
        finally:
            self._pending += outputs
