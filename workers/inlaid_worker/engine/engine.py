"""LLMEngine: requests in, token deltas out. step() = schedule, run the model, sample, post-process.

With async scheduling (engine/async_step.py; on by default where the runner takes token feeds) a step (decode rows fed
on the device, then prefill chunks and admissions) is launched before the previous step's sampled tokens are read,
and step() returns the previous launch's outputs (engine/async_pipeline.py: the methods, a mixin of LLMEngine).

Not thread-safe: one thread owns the engine (the server's step loop); other threads talk to it by queue.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from inlaid_worker.engine.adapters import AdapterEntry, AdapterRegistry, ModelCard
from inlaid_worker.engine.async_pipeline import AsyncPipeline
from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.detokenizer import IncrementalDetokenizer
from inlaid_worker.engine.device_sampler import sample_batch
from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.prefix_cache import PrefixCacheStats
from inlaid_worker.engine.sampler import TokenLogprobs, make_generator, min_tokens_ban, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler, SchedulerOutput
from inlaid_worker.engine.sequence import FinishReason, Sequence
from inlaid_worker.engine.step_builder import build_step_input
from inlaid_worker.engine.structured import GrammarState
from inlaid_worker.engine.tokenizer import PromptTokenizer
from inlaid_worker.env_switch import env_switch
from inlaid_worker.model.step_input import StepInput


class Runner(Protocol):
    def execute(self, step: StepInput) -> torch.Tensor: ...  # logits [S, vocab] float32
    # optional: execute_device(step), the same logits left on the runner's device (the engine samples there)
    # with prompt logprobs: take_prompt_logprobs(), after a step with StepInput.prompt_rows (model.prompt_logprobs)
    def add_adapter(self, name: str, adapter: Any) -> int: ...
    def remove_adapter(self, name: str) -> None: ...
    def prepare_adapters(self, names: Iterable[str], keep: Iterable[str]) -> dict[str, int]: ...


class AdapterInUse(ValueError):
    """remove_adapter's refusal of an adapter with requests in flight (UnloadAdapter: FAILED_PRECONDITION, marked
    in its trailing metadata: server/servicer.py REFUSAL_IN_USE; the gateway retries it once they drain)."""


class RequestError(ValueError):
    """A request cannot be admitted (too long, bad token ids, duplicate id); the message says why, `kind` whose fault it
    is (each raise names it: the gateway picks the client's status from the kind alone, never from the message)."""

    def __init__(self, message: str, *, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class EngineLimits:
    block_size: int
    num_kv_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int  # prompt + output tokens of one request; <= num_kv_blocks * block_size
    max_loras: int = 0  # distinct adapters among running sequences; 0 = the runner's max_adapters (if any)
    enable_prefix_caching: bool = True  # reuse the KV of cached full prompt blocks (prefix_cache.py)


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    text: str  # new text since the previous output
    token_ids: list[int]  # new tokens since the previous output
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprobs, ...] | None = None  # one per token of token_ids, when the request asked
    cached_tokens: int = 0  # prompt tokens the request's first admission took from the prefix cache
    # sampling.prompt_logprobs: on the first output with a token, one per prompt token (the first: logprob 0, rank
    # None, no top; then each token's logprob and rank given the tokens before it, and the top N there)
    prompt_logprobs: tuple[TokenLogprobs, ...] | None = None

    @classmethod
    def token_delta(
        cls,
        request_id: str,
        text: str,
        token_ids: list[int],
        finish_reason: FinishReason | None,
        prompt_tokens: int,
        completion_tokens: int,
        logprobs: tuple[TokenLogprobs, ...] | None,
        cached_tokens: int,
    ) -> RequestOutput:
        """RequestOutput(...) with no prompt logprobs (LLMEngine._output), the same object made without the frozen
        __init__ (which sets each field through object.__setattr__: 0.76 -> 0.22 us on the CPU). Every decode step
        makes one for each running sequence. A test checks that its fields are the dataclass's."""
        out = object.__new__(cls)
        d = out.__dict__
        d["request_id"] = request_id
        d["text"] = text
        d["token_ids"] = token_ids
        d["finish_reason"] = finish_reason
        d["prompt_tokens"] = prompt_tokens
        d["completion_tokens"] = completion_tokens
        d["logprobs"] = logprobs
        d["cached_tokens"] = cached_tokens
        d["prompt_logprobs"] = None
        return out


@dataclass(frozen=True)
class EngineState:
    free_kv_blocks: int
    total_kv_blocks: int
    block_size: int
    running: int
    waiting: int
    resident_adapters: tuple[str, ...]
    adapter_cache: Any = None  # lora.adapter_cache.AdapterCacheStats of the runner (None if it has none)
    prefix_cache: PrefixCacheStats | None = None  # KV prefix cache counters (hit / queried tokens, blocks)


# Prompt logprobs go back to the gateway in one message per choice (~25 bytes an entry); the gateway's channel takes
# at most 64 MiB a message, and one too large would end the worker's whole session with every request on it.
MAX_PROMPT_LOGPROB_ENTRIES = 1_000_000


def check_prompt_logprobs_size(prompt_tokens: int, prompt_logprobs: int | None) -> None:
    """RequestError when prompt_tokens x (prompt_logprobs + 1) entries exceed MAX_PROMPT_LOGPROB_ENTRIES."""
    if prompt_logprobs is None:
        return
    entries = prompt_tokens * (prompt_logprobs + 1)
    if entries > MAX_PROMPT_LOGPROB_ENTRIES:
        raise RequestError(
            f"prompt_logprobs: {prompt_logprobs} on a {prompt_tokens}-token prompt is {entries} entries, more than "
            f"{MAX_PROMPT_LOGPROB_ENTRIES}: ask for fewer top logprobs or a shorter prompt",
            kind=ErrorKind.BAD_INPUT,
        )


class LLMEngine(AsyncPipeline):
    def __init__(
        self,
        runner: Runner,
        tokenizer: PromptTokenizer,
        limits: EngineLimits,
        base_model_id: str,
        eos_token_ids: set[int] | None = None,
        async_scheduling: bool | None = None,
    ) -> None:
        """async_scheduling: launch the next decode step before reading this one's tokens (engine/async_step.py);
        None: env INLAID_ASYNC_SCHEDULING (default on). Only with a runner that takes token feeds."""
        if limits.max_model_len > limits.num_kv_blocks * limits.block_size:
            raise ValueError("max_model_len must fit in the KV cache (num_kv_blocks * block_size)")
        self.runner = runner
        self.tokenizer = tokenizer
        self.limits = limits
        self.eos_token_ids = tokenizer.eos_token_ids if eos_token_ids is None else set(eos_token_ids)
        # Structured outputs: compiled grammars (xgrammar is imported on the first request that asks)
        self.grammars = GrammarCache(tokenizer.hf, self.eos_token_ids)
        self.block_manager = BlockManager(
            limits.num_kv_blocks, limits.block_size, enable_caching=limits.enable_prefix_caching
        )
        max_loras = limits.max_loras or int(getattr(runner, "max_adapters", 0))  # never more than fit
        self.scheduler = Scheduler(self.block_manager, limits.max_num_seqs, limits.max_num_batched_tokens, max_loras)
        self.adapters = AdapterRegistry(base_model_id, limits.max_model_len)
        self._seqs: dict[str, Sequence] = {}
        # adapter name -> (its registry entry, its prefix-cache key): a new key for every load of a name
        self._adapter_cache_keys: dict[str, tuple[AdapterEntry, int]] = {}
        self._next_cache_key = itertools.count(1)  # 0 = the base model
        self._pending: list[RequestOutput] = []  # outputs produced outside step() (aborts, _settle)
        self.num_steps = 0
        self.num_preemptions = 0
        self._init_async()  # async scheduling's state: what is in flight, the counters (async_pipeline.py)
        # steps launched ahead may also admit waiting sequences and continue prefills (async_step.py); env
        # INLAID_ASYNC_ADMIT
        self.async_admit = env_switch("INLAID_ASYNC_ADMIT") is not False
        if async_scheduling is None:  # on (unless the env says off) where the runner can take it
            on = env_switch("INLAID_ASYNC_SCHEDULING") is not False
            async_scheduling = on and bool(getattr(runner, "supports_token_feed", False))
        self.async_scheduling = async_scheduling

    @property
    def async_scheduling(self) -> bool:
        return self._async

    @async_scheduling.setter
    def async_scheduling(self, on: bool) -> None:
        """Switchable between steps (a step in flight is read by the next step either way)."""
        if on and not getattr(self.runner, "supports_token_feed", False):
            raise ValueError("async scheduling needs a runner that takes StepInput.token_feed")
        self._async = bool(on)

    # ---- requests -------------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingParams,
        model: str = "",
        resumed_output_tokens: int = 0,
        grammar: GrammarState | None = None,
    ) -> None:
        """Queues a request. Raises UnknownModelError or RequestError (nothing is queued then).

        resumed_output_tokens: the last N prompt tokens are this request's own output from an earlier run
        (a gateway-side resume); presence / frequency penalties count them as output.
        grammar: the request's GrammarState, built and (for a resumed run) replayed elsewhere, e.g. on the grammar
        replay pool (GrammarCache.state_async: the worker's servicer always hands one for a resumed structured
        request, so its engine thread never replays); it must be fresh, of sampling.structured's compiled grammar and
        have replayed exactly the resumed tokens. Without it, a structured request's matcher is built here, and a
        resumed one replays its earlier output here, on the caller's thread (bounded: structured.REPLAY_MAX_S of CPU,
        REPLAY_MAX_WALL_S of wall time).
        """
        entry = self.adapters.resolve(model)
        if request_id in self._seqs:
            raise RequestError(f"request id {request_id!r} is already in flight", kind=ErrorKind.INTERNAL)
        self.check_prompt(prompt_token_ids)
        check_prompt_logprobs_size(len(prompt_token_ids), sampling.prompt_logprobs)
        if not 0 <= resumed_output_tokens < len(prompt_token_ids):
            raise RequestError(
                f"resumed_output_tokens must be in [0, {len(prompt_token_ids)}), got {resumed_output_tokens}",
                kind=ErrorKind.INTERNAL,  # set by the gateway's resume, never by the client
            )
        seq = Sequence(
            request_id,
            prompt_token_ids,
            sampling,
            adapter=None if entry is None else entry.card.id,
            adapter_slot=-1 if entry is None else entry.slot,
            resumed_output_tokens=resumed_output_tokens,
            cache_key=self._cache_key(entry),
        )
        if not sampling.greedy:
            seq.generator = make_generator(sampling.seed)  # on the CPU: one uniform per step (device_sampler)
        # min_tokens counts a resumed run's earlier output (as the penalties do): stop strings wait for the rest
        seq.detokenizer = IncrementalDetokenizer(
            self.tokenizer.hf,
            sampling.stop,
            max(0, sampling.min_tokens - resumed_output_tokens),
            self.tokenizer.marker_drop() if sampling.keep_tool_markers else None,
        )
        if grammar is not None:
            if sampling.structured is None or grammar.replayed != resumed_output_tokens:
                raise RequestError(
                    f"request {request_id!r}: a grammar state that replayed {grammar.replayed} tokens was handed for "
                    f"{resumed_output_tokens} resumed output tokens"
                    + ("" if sampling.structured is not None else " and no response_format"),
                    kind=ErrorKind.INTERNAL,  # the worker's own servicer builds the state
                )
            if sampling.structured.compiled is not None and grammar.compiled is not sampling.structured.compiled:
                raise RequestError(
                    f"request {request_id!r}: the grammar state is not of its response_format", kind=ErrorKind.INTERNAL
                )
            seq.grammar = grammar
        elif sampling.structured is not None:  # compiled already (servicer: compile_async); a resumed run replays here
            compiled = self.grammars.compile(sampling.structured)
            replay = prompt_token_ids[len(prompt_token_ids) - resumed_output_tokens :] if resumed_output_tokens else []
            seq.grammar = GrammarState(compiled, replay)
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def _cache_key(self, entry: AdapterEntry | None) -> int:
        """The prefix-cache key of a model: 0 for the base, else unique to this load of the adapter (a
        registry entry is created per load, so a name loaded again with other weights gets a new key)."""
        if entry is None:
            return 0
        known = self._adapter_cache_keys.get(entry.card.id)
        if known is None or known[0] is not entry:
            known = (entry, next(self._next_cache_key))
            self._adapter_cache_keys[entry.card.id] = known
        return known[1]

    def check_prompt(self, prompt_token_ids: list[int]) -> None:
        n, limit = len(prompt_token_ids), self.limits.max_model_len
        if n == 0:
            raise RequestError("the prompt is empty", kind=ErrorKind.BAD_INPUT)
        if n >= limit:
            raise RequestError(
                f"the prompt has {n} tokens; this model's maximum context length is {limit} tokens "
                f"(prompt plus at least one generated token)",
                kind=ErrorKind.BAD_INPUT,
            )
        vocab = self.tokenizer.vocab_size
        bad = [t for t in prompt_token_ids if not 0 <= t < vocab]
        if bad:
            raise RequestError(
                f"prompt token id {bad[0]} is outside the vocabulary (size {vocab})", kind=ErrorKind.BAD_INPUT
            )

    def max_new_tokens(self, num_prompt_tokens: int, requested: int) -> int:
        """Effective max_tokens: the request's (0 = as many as fit), clamped to the context length."""
        room = self.limits.max_model_len - num_prompt_tokens
        return room if requested <= 0 else min(requested, room)

    def abort_request(self, request_id: str) -> bool:
        seq = self._seqs.get(request_id)
        if seq is not None and self._unread(seq):
            self._settle()  # its unread token first, as the synchronous engine emitted it (it may end it there)
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.finish(seq, FinishReason.ABORT)
        self._pending.append(self._output(seq, "", [], FinishReason.ABORT))
        return True

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._pending) or self._launched

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def state(self) -> EngineState:
        return EngineState(
            self.block_manager.num_free_blocks,
            self.limits.num_kv_blocks,
            self.limits.block_size,
            self.num_running,
            self.num_waiting,
            tuple(self.adapters.names),
            self.adapter_stats(),
            self.block_manager.cache_stats(),
        )

    def prefix_cache_stats(self) -> PrefixCacheStats:
        return self.block_manager.cache_stats()

    def base_weights_changed(self) -> None:
        """The base model's weights changed (a re-quantized layer was swapped in, or the previous weights were
        put back): no KV computed before may be reused. Flushes the prefix cache and bumps the base generation
        that every chain's root covers; sequences in flight keep their blocks but never register them.
        Callers change the runner's weights next: a step launched ahead is read first (the GPU is idle after; a
        failed read ends the requests whose tokens it lost with an error and raises, nothing changed: _settle)."""
        self._settle()
        self.block_manager.reset_cache()

    def adapter_stats(self) -> Any:
        """The runner's adapter residency and hit-rate counters (lora.adapter_cache.AdapterCacheStats)."""
        stats = getattr(self.runner, "adapter_stats", None)
        return None if stats is None else stats()

    def requests_for(self, model: str) -> list[str]:
        return [rid for rid, s in self._seqs.items() if s.adapter == model]

    # ---- the step -------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        outputs, self._pending = self._pending, []
        if self._launched and self._advance(outputs):  # async: the previous launch's outputs; True: launched ahead
            return outputs
        scheduled = self.scheduler.schedule()
        self.num_preemptions += len(scheduled.preempted)
        if scheduled.is_empty:
            return outputs
        self._assign_adapter_slots(scheduled)
        step = build_step_input(scheduled.chunks, self.limits.block_size, "cpu")  # the runner moves it
        logits, scored = self._run_model(step)
        if self._async:  # sampled on the device, or by the host at the next call: never waited for here
            self.scheduler.commit(scheduled)
            self.num_steps += 1
            self._defer(scheduled, logits, scored)
            return outputs
        if step.prompt_rows is not None:
            self._collect_prompt_logprobs(scheduled, scored)
        self.scheduler.commit(scheduled)
        self.num_steps += 1
        return outputs + self._postprocess(scheduled, logits)

    def _run_model(self, step: StepInput) -> tuple[torch.Tensor, Any]:
        """Runs the step: its logits [S, vocab] float32 (on the device where the runner offers that) and its prompt
        logprobs (model.prompt_logprobs.PromptLogprobs; None unless the step asked)."""
        execute = getattr(self.runner, "execute_device", None) or self.runner.execute
        logits = execute(step)
        return logits, None if step.prompt_rows is None else self.runner.take_prompt_logprobs()  # type: ignore[attr-defined]

    def _fail(self, seq: Sequence) -> RequestOutput:
        detok = seq.detokenizer
        text = detok.flush() if detok is not None else ""
        self.scheduler.finish(seq, FinishReason.ERROR)
        self._seqs.pop(seq.request_id, None)
        return self._output(seq, text, [], FinishReason.ERROR)

    def _assign_adapter_slots(self, scheduled: SchedulerOutput, held: Iterable[str] = ()) -> None:
        """Loads the step's adapters into device slots (on demand; running sequences' adapters stay, and `held`:
        those of a step in flight, whose rows may have finished already)."""
        names = [c.seq.adapter for c in scheduled.chunks if c.seq.adapter is not None]
        if not names:
            return
        keep = [s.adapter for s in self.scheduler.running if s.adapter is not None]
        keep += held
        slots = self.runner.prepare_adapters(names, keep)
        for chunk in scheduled.chunks:
            if chunk.seq.adapter is not None:
                chunk.seq.adapter_slot = slots[chunk.seq.adapter]

    def _postprocess(self, scheduled: SchedulerOutput, logits: torch.Tensor, into: list[RequestOutput] | None = None,
                     logit_rows: list[int] | None = None) -> list[RequestOutput]:  # fmt: skip
        """Samples the step's sampling rows and appends their tokens; the outputs go to `into` (returned) one by one,
        so a failure part-way keeps the outputs of the rows already finished (async_pipeline's _settle).
        logit_rows: chunk i's row of logits (None: row i). The sampler reads the sampling rows of logits in place
        (a step where some rows do not sample copies none of them: sampling_reserve_bytes counts no copy)."""
        outputs: list[RequestOutput] = [] if into is None else into
        rows = [i for i, c in enumerate(scheduled.chunks) if c.samples]
        if not rows:  # nothing to wait for: the runner's graphs guard their own pinned inputs (decode_graphs.Staging)
            return outputs
        seqs = [scheduled.chunks[i].seq for i in rows]
        params = [s.sampling for s in seqs]
        histories = [s.penalty_history() if s.sampling.has_penalties else None for s in seqs]
        grammars = [s.grammar for s in seqs] if any(s.grammar is not None for s in seqs) else None
        at = rows if logit_rows is None else [logit_rows[i] for i in rows]
        picked = None if len(at) == logits.shape[0] else at  # rows in order: every row of logits
        # on the GPU one batch (device_sampler); on the CPU the per-row loop, which measured as fast or slightly
        # faster there (bench/results/sampling-2026-11-30-cpu.md) and picks the same tokens
        sample = sample_batch if logits.device.type != "cpu" else sample_rows
        banned = None  # min_tokens: EOS and stop token ids masked until the output (resumed included) has that many
        if any(p.min_tokens for p in params):
            eos = self.eos_token_ids
            banned = [min_tokens_ban(s.sampling, s.resumed_output_tokens + len(s.output_token_ids), eos) for s in seqs]
        out = sample(logits, params, [s.generator for s in seqs], histories, grammars, banned=banned, rows=picked)
        for seq, token, lp in zip(seqs, out.tokens, out.logprobs, strict=True):
            outputs.append(self._append_token(seq, token, lp))
        return outputs

    @staticmethod
    def _collect_prompt_logprobs(scheduled: SchedulerOutput, scored: Any) -> None:
        """Hands the step's prompt logprobs (model.prompt_logprobs.PromptLogprobs, rows in chunk order) to their
        sequences."""
        if scored is None:
            raise RuntimeError("the runner returned no prompt logprobs for a step that asked")
        lps, ranks = scored.logprobs.tolist(), scored.ranks.tolist()
        top_ids, top_vals = scored.top_ids.tolist(), scored.top_logprobs.tolist()
        j = 0
        for chunk in scheduled.chunks:
            seq = chunk.seq
            a, b = seq.prompt_span(chunk.start, chunk.end)
            if a >= b:
                continue
            n = int(seq.sampling.prompt_logprobs or 0)
            targets = seq.prompt_token_ids[a + 1 : b + 1]
            for t, r in enumerate(range(j, j + b - a)):
                top = tuple(zip(top_ids[r][:n], top_vals[r][:n], strict=True))
                seq.prompt_logprobs_pending.append(TokenLogprobs(targets[t], lps[r], top, int(ranks[r])))
            j += b - a
            seq.prompt_logprobs_done = b
        if j != len(lps):  # the step builder chose the rows (prompt_span too): a drift would misplace every entry
            raise RuntimeError(f"the runner scored {len(lps)} prompt rows, the step's chunks need {j}")

    @staticmethod
    def _take_prompt_logprobs(seq: Sequence) -> tuple[TokenLogprobs, ...] | None:
        """The prompt logprobs to send with seq's first output (None: not asked, or sent already)."""
        if seq.sampling.prompt_logprobs is None or seq.prompt_logprobs_sent:
            return None
        seq.prompt_logprobs_sent = True
        entries = (TokenLogprobs(seq.prompt_token_ids[0], 0.0, ()), *seq.prompt_logprobs_pending)
        seq.prompt_logprobs_pending = []
        return entries

    def _append_token(self, seq: Sequence, token: int, logprobs: TokenLogprobs | None = None) -> RequestOutput:
        # every decode step runs this once a sequence: seq.num_tokens and _take_prompt_logprobs's test are inlined
        output_ids = seq.output_token_ids
        output_ids.append(token)
        p = seq.sampling
        detok = seq.detokenizer
        if detok is None:
            raise RuntimeError(f"{seq.request_id} has no detokenizer")
        reason: FinishReason | None = None
        grammar = seq.grammar
        # a grammar ends with EOS (the mask allows it only where the grammar can end), ignore_eos or not
        ended = grammar is not None and self._grammar_ended(seq, token)
        if ended or token in p.stop_token_ids or (not p.ignore_eos and token in self.eos_token_ids):
            reason, text = FinishReason.STOP, detok.flush()  # a stop token's text is never emitted
        else:
            text = detok.add([token])
            if detok.stopped:
                reason = FinishReason.STOP
            elif (
                len(output_ids) >= p.max_tokens
                or len(seq.prompt_token_ids) + len(output_ids) >= self.limits.max_model_len  # seq.num_tokens
            ):
                reason = FinishReason.LENGTH
                text += detok.flush()
            elif grammar is not None and grammar.too_slow:  # its mask would slow every row of the worker
                reason = FinishReason.ERROR
                text += detok.flush()
        if reason is not None:
            self.scheduler.finish(seq, reason)
            del self._seqs[seq.request_id]
        out = self._output(seq, text, [token], reason, None if logprobs is None else (logprobs,))
        if p.prompt_logprobs is None or seq.prompt_logprobs_sent:
            return out
        prompt = self._take_prompt_logprobs(seq)
        return out if prompt is None else replace(out, prompt_logprobs=prompt)

    @staticmethod
    def _grammar_ended(seq: Sequence, token: int) -> bool:
        """Feeds the sampled token to the sequence's matcher; True once the grammar has terminated. A token the
        matcher refuses (the mask forbids that) ends the request too rather than failing the engine step."""
        grammar = seq.grammar
        assert grammar is not None
        return not grammar.accept(token) or grammar.terminated

    @staticmethod
    def _output(
        seq: Sequence,
        text: str,
        tokens: list[int],
        reason: FinishReason | None,
        logprobs: tuple[TokenLogprobs, ...] | None = None,
    ) -> RequestOutput:
        if logprobs is None and seq.sampling.logprobs is not None:
            logprobs = ()  # asked for: an empty list for a delta without tokens (an abort)
        return RequestOutput.token_delta(
            seq.request_id,
            text,
            tokens,
            reason,
            seq.num_prompt_tokens,
            len(seq.output_token_ids),
            logprobs,
            seq.prompt_cached_tokens or 0,
        )

    # ---- adapters -------------------------------------------------------------------------------------
    def add_adapter(
        self, name: str, adapter: Any, rank: int, target_modules: tuple[str, ...], source: str = "", digest: str = ""
    ) -> ModelCard:
        """Makes a loaded, validated adapter resident under `name` (a task name); `source`: the path LoadAdapter read
        it from (WorkerInfo.adapter_paths), "" otherwise; `digest`: the digest of the bytes it read there
        (WorkerInfo.adapter_digests)."""
        if self.adapters.is_base(name):
            raise ValueError(f"an adapter cannot be named like the base model ({name!r})")
        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded")
        self._settle()  # the runner's slots change: no step may be running on them
        slot = self.runner.add_adapter(name, adapter)
        return self.adapters.add(name, slot, rank, target_modules, source, digest)

    def remove_adapter(self, name: str) -> None:
        """Unloads an adapter; refused while requests for it are in flight."""
        in_flight = self.requests_for(name)
        if in_flight:
            raise AdapterInUse(f"adapter {name!r} has {len(in_flight)} requests in flight")
        self._settle()  # a step launched ahead may still run a finished request's row on this adapter
        self.adapters.remove(name)
        self._adapter_cache_keys.pop(name, None)  # its cached blocks are never matched again (LRU-evicted)
        self.runner.remove_adapter(name)
