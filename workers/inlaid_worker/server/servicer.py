"""gRPC servicer for inlaid.v1.Worker: a thin shell over the engine loop.

Session semantics: each Admit is validated on the stream's reader thread and queued to the engine loop (an Admit
whose grammar is not compiled yet waits for it in the engine loop, so the reader goes on to the next message; a
resumed structured Admit waits likewise for its earlier output to be replayed through the grammar on the
grammar cache's replay pool, GrammarCache.state_async, never on the engine thread); the
response stream carries TokenDeltas (the last one has a finish reason), RequestErrors and WorkerStates. If
the call is cancelled (client gone, deadline), every request admitted on it is aborted and its KV blocks are
freed. If the client only half-closes (stops sending), its requests run to the end, then the stream ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import replace
from typing import Any

import grpc

from inlaid_worker.engine.adapters import UnknownModelError
from inlaid_worker.engine.compile_pool import ClosedError
from inlaid_worker.engine.detokenizer import TokenTexts
from inlaid_worker.engine.engine import AdapterInUse, LLMEngine, RequestError, check_prompt_logprobs_size
from inlaid_worker.engine.error_kind import ErrorKind, declared_kind, kind_of
from inlaid_worker.engine.grammar_cache import bound
from inlaid_worker.engine.sampling_params import SamplingError
from inlaid_worker.engine.tokenizer import PromptError
from inlaid_worker.engine.tool_template import chat_messages, parse_tools
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from inlaid_worker.lora.adapter import AdapterChanging, LoraAdapter
from inlaid_worker.server.convert import card_to_proto, event_to_proto, sampling_from_proto, state_to_proto
from inlaid_worker.server.engine_loop import AdmitError, EngineLoop
from inlaid_worker.server.refusal import abort_with

log = logging.getLogger(__name__)

AdapterLoader = Callable[[str], LoraAdapter]  # path -> validated adapter (raises lora.AdapterError)
# UnloadAdapter's trailing metadata on its refusal of an adapter with requests in flight (FAILED_PRECONDITION): the
# gateway's marker for a refusal to retry once they drain (worker-admin.service.ts REFUSAL_KEY, ADAPTER_IN_USE)
REFUSAL_IN_USE = ("inlaid-refusal", "adapter-in-use")
ADAPTER_CALL_TIMEOUT_S = 120.0
_CALL_POLL_S = 0.25  # how often a waiting Prepare looks whether its call is still active


def _wait_s(context: grpc.ServicerContext) -> float:
    """How long an adapter (or WeightsDigest) call waits for the engine loop: ADAPTER_CALL_TIMEOUT_S, or less when the
    client's deadline comes first (the gateway's is 60 s: a call it gave up on is then dropped if the loop has not started it)."""
    remaining = context.time_remaining()
    return ADAPTER_CALL_TIMEOUT_S if remaining is None else max(0.0, min(ADAPTER_CALL_TIMEOUT_S, remaining))


def _refusal(request_id: str, exc: Exception) -> AdmitError:
    """The AdmitError of an Admit that raised: `exc`'s text and kind when it names one (a check's refusal, a shutdown's
    ClosedError); else an error no check foresaw, the worker's own failure (INTERNAL), logged here."""
    if declared_kind(exc) is not None:
        return AdmitError.of(request_id, exc)
    log.exception("admit %s failed", request_id)
    return AdmitError(request_id, f"request refused: {type(exc).__name__}: {str(exc)[:200]}", ErrorKind.INTERNAL)


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(
        self, loop: EngineLoop, load_adapter: AdapterLoader, adapter_error: type[Exception], worker_id: str
    ) -> None:
        self.loop = loop
        self.engine: LLMEngine = loop.engine  # only immutable parts are read outside the loop thread
        self._load_adapter = load_adapter
        self._adapter_error = adapter_error
        self.worker_id = worker_id
        # The text and bytes of logprobs' tokens, decoded on the session threads (never on the engine's).
        self._token_texts = TokenTexts(self.engine.tokenizer.hf)

    # ---- Prepare ------------------------------------------------------------------------------------------
    def Prepare(self, request: worker_pb2.PrepareRequest, context: grpc.ServicerContext) -> Any:
        self._resolve(request.model, context)
        try:
            special = request.add_special_tokens if request.HasField("add_special_tokens") else None
            ids = self._encode(request, add_special_tokens=special)
            self.engine.check_prompt(ids)
            max_tokens = self.engine.max_new_tokens(len(ids), request.sampling.max_tokens)
            # a response_format is compiled here (cached for the Admit), so a bad one is refused up front
            sampling = sampling_from_proto(request.sampling, max_tokens, self.engine.tokenizer.vocab_size)
            # refused here, before admission (the engine checks again at Admit, where it could only be a RequestError event)
            check_prompt_logprobs_size(len(ids), sampling.prompt_logprobs)
            if sampling.structured is not None and sampling.structured.compiled is None:
                self._await_compile(sampling.structured, context)
        except (PromptError, RequestError, SamplingError, ClosedError) as exc:  # each names its kind (its status)
            abort_with(context, kind_of(exc), str(exc))
        return worker_pb2.PrepareResponse(prompt_token_ids=ids, max_tokens=max_tokens)

    def _await_compile(self, so: Any, context: grpc.ServicerContext) -> None:
        """Waits for `so`'s compile (GrammarCache.compile_async; a StructuredOutputError on a bad spec or a timeout).
        gRPC does not interrupt a handler whose call ends: when the client leaves (the gateway cancels the call), the
        call's callback cancels the wait, so the compile loses this waiter (dropped if nobody else waits and it has
        not started) and this thread is freed at once; the call then ends CANCELLED. The wait also looks at the call
        every 0.25 s: a cancel that lands while the callback is being added may never run it."""
        grammar = self.engine.grammars.compile_async(so)
        if not context.add_callback(grammar.cancel):  # the call has ended already
            grammar.cancel()
        try:
            while True:
                try:
                    grammar.result(timeout=_CALL_POLL_S)
                    break
                except TimeoutError:
                    if not context.is_active():
                        grammar.cancel()
        except CancelledError:
            left = context.time_remaining()
            if left is not None and left <= 0:  # the call's deadline ended it, not the client
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Prepare: the deadline passed while its grammar compiled")
            context.abort(grpc.StatusCode.CANCELLED, "Prepare cancelled: the client left while its grammar compiled")

    def _encode(
        self, request: Any, add_generation_prompt: bool = True, add_special_tokens: bool | None = None
    ) -> list[int]:
        """Prepare's (and Tokenize's) prompt ids; `request` has model, prompt, messages and tools.
        `add_special_tokens` None is vLLM's default: True for a prompt, False for messages (the template has them)."""
        tok = self.engine.tokenizer
        if request.messages and request.prompt:
            raise PromptError("give either prompt or messages, not both")
        if request.messages:
            if request.tools or tok.tool_support.native:
                try:
                    tools = parse_tools(request.tools)
                except ValueError as exc:
                    raise PromptError(str(exc)) from exc
                mistral = tok.tool_support.parser == "mistral"
                messages = chat_messages(request.messages, short_ids=mistral)
                return tok.encode_chat(messages, tools, add_generation_prompt, add_special_tokens is True)
            plain = [{"role": m.role, "content": m.content} for m in request.messages]
            return tok.encode_chat(plain, None, add_generation_prompt, add_special_tokens is True)
        if not request.prompt:
            raise PromptError("prompt or messages is required")
        return tok.encode_prompt(request.prompt, add_special_tokens is not False)

    # ---- Tokenize / Detokenize (vLLM's /tokenize and /detokenize) -----------------------------------------
    def Tokenize(self, request: worker_pb2.TokenizeRequest, context: grpc.ServicerContext) -> Any:
        """The ids Prepare would give the same prompt or messages; no context-length check (count vs max_model_len)."""
        self._resolve(request.model, context)
        gen = request.add_generation_prompt if request.HasField("add_generation_prompt") else True
        special = request.add_special_tokens if request.HasField("add_special_tokens") else None
        try:
            ids = self._encode(request, add_generation_prompt=gen, add_special_tokens=special)
        except PromptError as exc:
            abort_with(context, kind_of(exc), str(exc))
        strs = list(self.engine.tokenizer.hf.convert_ids_to_tokens(ids)) if request.return_token_strs else []
        return common_pb2.TokenizeResponse(
            token_ids=ids, max_model_len=self.engine.limits.max_model_len, token_strs=strs
        )

    def Detokenize(self, request: common_pb2.DetokenizeRequest, context: grpc.ServicerContext) -> Any:
        """The text of the ids, special tokens kept (as vLLM's /detokenize), so a tokenized chat round-trips."""
        self._resolve(request.model, context)
        vocab = self.engine.tokenizer.vocab_size
        bad = next((i for i in request.token_ids if i >= vocab), None)
        if bad is not None:
            abort_with(context, ErrorKind.BAD_INPUT, f"tokens: token id {bad} is outside the vocabulary (0..{vocab - 1})")
        hf = self.engine.tokenizer.hf
        text = hf.decode(list(request.token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return common_pb2.DetokenizeResponse(prompt=text)

    def _resolve(self, model: str, context: grpc.ServicerContext) -> None:
        try:
            self.engine.adapters.resolve(model)
        except UnknownModelError as exc:
            abort_with(context, kind_of(exc), str(exc))

    # ---- Session ------------------------------------------------------------------------------------------
    def Session(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        sid, outbox = self.loop.open_session()
        context.add_callback(lambda: self.loop.close_session(sid, abort=True))

        def read() -> None:
            try:
                for msg in request_iterator:
                    self._control(sid, msg, outbox)
                self.loop.close_session(sid, abort=False)  # half-close: let its requests finish
            except Exception:  # the stream broke: the client is gone
                self.loop.close_session(sid, abort=True)

        threading.Thread(target=read, name=f"session-{sid}", daemon=True).start()
        while True:
            event = outbox.get()
            if event is None:
                return
            yield event_to_proto(event, self.worker_id, self._token_texts.get)

    def _control(self, sid: int, msg: worker_pb2.ControlMessage, outbox: Any) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "abort":
            self.loop.abort(sid, msg.abort.request_id)
            return
        if kind != "admit":
            return
        a = msg.admit
        try:
            if not a.request_id:  # the gateway always sets one
                raise RequestError("request_id is required", kind=ErrorKind.INTERNAL)
            ids = list(a.prompt_token_ids)
            self.engine.check_prompt(ids)
            max_tokens = self.engine.max_new_tokens(len(ids), a.sampling.max_tokens)
            sampling = sampling_from_proto(a.sampling, max_tokens, self.engine.tokenizer.vocab_size)
            # checked by engine.add_request (an AdmitError on this session's outbox, as here)
            resumed = a.resumed_output_tokens if a.HasField("resumed_output_tokens") else 0
            grammar: Future[Any] | None = None
            if sampling.structured is not None and 0 < resumed < len(ids):
                # compiled, then the earlier output replayed into a fresh matcher, on the replay pool: never on the
                # engine thread (a slow replay would stall every request); the loop hands the ready state to the engine
                grammar = self.engine.grammars.state_async(sampling.structured, ids[len(ids) - resumed :])
            elif sampling.structured is not None:  # compiled off this thread and the engine's (Prepare cached it)
                grammar = self.engine.grammars.compile_async(sampling.structured)
                if grammar.done():
                    sampling, grammar = bound(sampling, grammar.result()), None
        except Exception as exc:  # an error refuses this request only, never the whole Session
            outbox.put(_refusal(a.request_id, exc))
            return
        try:
            if grammar is None:
                self.loop.admit(sid, a.request_id, ids, sampling, a.model, resumed)
            else:  # not compiled yet: the next messages go on meanwhile
                self.loop.admit_when_ready(sid, a.request_id, ids, sampling, a.model, resumed, grammar)
        except Exception as exc:
            outbox.put(_refusal(a.request_id, exc))

    # ---- info and adapters --------------------------------------------------------------------------------
    def GetInfo(self, request: worker_pb2.InfoRequest, context: grpc.ServicerContext) -> Any:
        # draining from the refusing flag itself (refuse_new sets it before it publishes the draining state)
        state = replace(self.loop.latest_state, draining=self.loop.refusing)
        return worker_pb2.WorkerInfo(
            worker_id=self.worker_id,
            base_model=self.engine.adapters.base_model_id,
            models=[card_to_proto(c) for c in self.engine.adapters.cards],
            max_model_len=self.engine.limits.max_model_len,
            state=state_to_proto(state, self.worker_id),
            tool_call_parser=self.engine.tokenizer.tool_support.parser,
            native_tools=self.engine.tokenizer.tool_support.native,
            adapter_paths=self.engine.adapters.sources,
            adapter_digests=self.engine.adapters.digests,
        )

    def LoadAdapter(self, request: worker_pb2.LoadAdapterRequest, context: grpc.ServicerContext) -> Any:
        name = request.name
        if not name or "/" in name or name != name.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid adapter name {name!r}")
        if name in self.engine.adapters or self.engine.adapters.is_base(name):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"a model named {name!r} is already loaded")
        try:
            adapter = self._load_adapter(request.path)  # disk I/O here, off the engine thread
        except AdapterChanging as exc:  # being written: a retry may succeed (the gateway retries ABORTED)
            context.abort(grpc.StatusCode.ABORTED, f"adapter {name!r} not loaded: {exc}")
        except self._adapter_error as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"adapter {name!r} refused: {exc}")
        digest = adapter.digest  # of the bytes just read and validated (lora.digest), not a second read
        try:
            card = self._on_engine_loop(
                context,
                lambda e: e.add_adapter(
                    name, adapter, adapter.rank, tuple(sorted(adapter.targets)), request.path, digest
                ),
                f"loading adapter {name!r}",
                "it may still load: see GetInfo",
            )
        except ValueError as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except RuntimeError as exc:  # e.g. every adapter slot is in use
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        out = card_to_proto(card)
        out.digest = digest  # only in this answer (ModelCard.digest): WorkerInfo's cards go to the gateway's clients
        return out

    def _on_engine_loop(
        self, context: grpc.ServicerContext, fn: Callable[[LLMEngine], Any], what: str, running: str
    ) -> Any:
        """fn(engine) on the engine loop, waited for at most _wait_s(context). A client whose deadline has already
        passed (e.g. while the adapter was read from disk) or who is gone gets DEADLINE_EXCEEDED at once, and fn is
        never queued. Past the wait: DEADLINE_EXCEEDED (it was UNKNOWN: concurrent.futures.TimeoutError fell
        through); fn is dropped if the loop has not started it (then nothing changed), else it goes on (`running`
        says so). fn's own exceptions are raised here."""
        wait = _wait_s(context)
        if wait <= 0 or not context.is_active():
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{what}: the client's deadline passed before it reached the engine loop; it was not started",
            )
        fut = self.loop.call(fn)
        try:
            return fut.result(timeout=wait)
        except TimeoutError:  # concurrent.futures.TimeoutError (its alias since 3.11)
            dropped = fut.cancel()
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{what} took longer than {wait:.3g} s on the engine loop; "
                + ("it was not started and is dropped" if dropped else running),
            )

    def UnloadAdapter(self, request: worker_pb2.UnloadAdapterRequest, context: grpc.ServicerContext) -> Any:
        try:
            self._on_engine_loop(
                context,
                lambda e: e.remove_adapter(request.name),
                f"unloading adapter {request.name!r}",
                "it may still unload: see GetInfo",
            )
        except UnknownModelError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except AdapterInUse as exc:
            # marked, so that the gateway tells it from any other FAILED_PRECONDITION (worker-admin.service.ts)
            context.set_trailing_metadata((REFUSAL_IN_USE,))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:  # the base model's name: no adapter, and no retry makes it one
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return worker_pb2.UnloadAdapterResponse()
