"""Conversions between the gRPC messages and the engine's plain types."""

from __future__ import annotations

from collections.abc import Callable

from inlaid_worker.engine.adapters import ModelCard
from inlaid_worker.engine.engine import EngineState, RequestOutput
from inlaid_worker.engine.sampler import TokenLogprobs
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.structured import StructuredOutput
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.server.engine_loop import AdmitError, Event, StateEvent
from inlaid_worker.server.refusal import kind_to_proto

_FINISH = {
    None: common_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABORT: common_pb2.FINISH_REASON_ABORT,
    FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
}


def sampling_from_proto(p: common_pb2.SamplingParams, max_tokens: int, vocab_size: int | None = None) -> SamplingParams:
    """Raises SamplingError naming the bad parameter; `max_tokens` is the effective (clamped) limit; `vocab_size`:
    the model's, which logit_bias ids must be below (None: not checked)."""
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=p.temperature if p.HasField("temperature") else 1.0,
        top_p=p.top_p if p.HasField("top_p") else 1.0,
        top_k=p.top_k if p.HasField("top_k") and p.top_k > 0 else 0,
        seed=p.seed if p.HasField("seed") else None,
        stop=tuple(p.stop),
        stop_token_ids=tuple(p.stop_token_ids),
        ignore_eos=p.ignore_eos,
        presence_penalty=p.presence_penalty if p.HasField("presence_penalty") else 0.0,
        frequency_penalty=p.frequency_penalty if p.HasField("frequency_penalty") else 0.0,
        repetition_penalty=p.repetition_penalty if p.HasField("repetition_penalty") else 1.0,
        logprobs=p.logprobs if p.HasField("logprobs") else None,
        structured=structured_from_proto(p),
        logit_bias=tuple(sorted((int(t), float(b)) for t, b in p.logit_bias.bias.items())),
        min_p=p.min_p if p.HasField("min_p") else 0.0,
        min_tokens=p.min_tokens if p.HasField("min_tokens") else 0,
        prompt_logprobs=p.prompt_logprobs if p.HasField("prompt_logprobs") else None,
        keep_tool_markers=p.keep_tool_markers,
    )
    if vocab_size is not None:
        params.check_vocab(vocab_size)
    return params


def structured_from_proto(p: common_pb2.SamplingParams) -> StructuredOutput | None:
    """The response_format oneof (unset = free text); raises StructuredOutputError (a SamplingError)."""
    kind = p.WhichOneof("response_format")
    if kind is None:
        return None
    if kind == "json_schema":
        return StructuredOutput("json_schema", p.json_schema)
    if kind == "json_object":
        return StructuredOutput("json_object") if p.json_object else None
    if kind == "regex":
        return StructuredOutput("regex", p.regex)
    return StructuredOutput("choice", choices=tuple(p.choice.values))


TokenText = Callable[[int], tuple[str, bytes]]  # token id -> (text, bytes); detokenizer.TokenTexts.get


def logprobs_to_proto(logprobs: tuple[TokenLogprobs, ...], token_text: TokenText) -> common_pb2.Logprobs:
    """Also prompt logprobs: their `sampled` entries carry the rank (TokenLogprobs.rank)."""

    def entry(token_id: int, logprob: float, rank: int | None = None) -> common_pb2.LogprobEntry:
        text, raw = token_text(token_id)
        e = common_pb2.LogprobEntry(token_id=token_id, token=text, token_bytes=raw, logprob=logprob)
        if rank is not None:
            e.rank = rank
        return e

    return common_pb2.Logprobs(
        tokens=[
            common_pb2.TokenLogprob(sampled=entry(t.token_id, t.logprob, t.rank), top=[entry(i, v) for i, v in t.top])
            for t in logprobs
        ]
    )


def card_to_proto(card: ModelCard) -> common_pb2.ModelCard:
    return common_pb2.ModelCard(
        id=card.id,
        parent=card.parent,
        rank=card.rank,
        target_modules=list(card.target_modules),
        max_model_len=card.max_model_len,
    )


def state_to_proto(event: StateEvent, worker_id: str) -> worker_pb2.WorkerState:
    s: EngineState = event.state
    return worker_pb2.WorkerState(
        worker_id=worker_id,
        free_kv_blocks=s.free_kv_blocks,
        total_kv_blocks=s.total_kv_blocks,
        block_size=s.block_size,
        running=s.running,
        waiting=s.waiting,
        resident_adapters=list(s.resident_adapters),
        steps_per_s=event.steps_per_s,
        draining=event.draining,
    )


def event_to_proto(
    event: Event, worker_id: str, token_text: TokenText | None = None
) -> worker_pb2.WorkerEvent:
    """token_text: needed for outputs that carry logprobs (their tokens' text and bytes)."""
    if isinstance(event, RequestOutput):
        delta = worker_pb2.TokenDelta(
            request_id=event.request_id,
            text=event.text,
            token_ids=event.token_ids,
            finish_reason=_FINISH[event.finish_reason],
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            cached_tokens=event.cached_tokens,
        )
        if event.logprobs is not None:
            if token_text is None:
                raise ValueError("an output with logprobs needs token_text")
            delta.logprobs.CopyFrom(logprobs_to_proto(event.logprobs, token_text))
        if event.prompt_logprobs is not None:
            if token_text is None:
                raise ValueError("an output with prompt logprobs needs token_text")
            delta.prompt_logprobs.CopyFrom(logprobs_to_proto(event.prompt_logprobs, token_text))
        return worker_pb2.WorkerEvent(delta=delta)
    if isinstance(event, AdmitError):
        return worker_pb2.WorkerEvent(
            error=worker_pb2.RequestError(
                request_id=event.request_id, message=event.message, kind=kind_to_proto(event.kind)
            )
        )
    if isinstance(event, StateEvent):
        return worker_pb2.WorkerEvent(state=state_to_proto(event, worker_id))
    raise TypeError(f"not an event: {event!r}")
