"""Prompt logprobs through the worker's gRPC API (a tiny random Llama): sampling.prompt_logprobs is parsed and
range-checked (INVALID_ARGUMENT naming prompt_logprobs), and the first delta carries TokenDelta.prompt_logprobs: one
entry per prompt token (the first without rank), each prompt token with its rank and the top N, with text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import one_request, serving
from inlaid_worker.engine import engine as engine_module
from inlaid_worker.engine.sampling_params import SamplingError
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.server.convert import sampling_from_proto

FINISH = common_pb2.FinishReason


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    model = make_tiny_llama(tmp_path_factory.mktemp("grpc-prompt-lp") / "model")
    with serving(model, kv_cache_bytes=1 << 20) as (stub, _):
        yield stub


def deltas(stub: Any, prompt: list[int], params: common_pb2.SamplingParams) -> list[Any]:
    got, error = one_request(stub, prompt, params)
    if error is not None:
        raise AssertionError(error.message)
    return got


def test_the_field_reaches_the_sampling_params_and_is_range_checked(stub: Any) -> None:
    assert sampling_from_proto(common_pb2.SamplingParams(prompt_logprobs=3), 4).prompt_logprobs == 3
    assert sampling_from_proto(common_pb2.SamplingParams(), 4).prompt_logprobs is None
    with pytest.raises(SamplingError, match="prompt_logprobs must be in"):
        sampling_from_proto(common_pb2.SamplingParams(prompt_logprobs=21), 4)
    with pytest.raises(grpc.RpcError) as err:
        stub.Prepare(worker_pb2.PrepareRequest(prompt="hi", sampling=common_pb2.SamplingParams(prompt_logprobs=21)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt_logprobs" in err.value.details()


def test_prepare_refuses_too_many_prompt_logprob_entries_before_admission(
    stub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bound scaled down to the tiny model: a 3-token prompt x (2 + 1) logprobs is 9 entries, over 8 (the check reads
    # the module's constant when called, on the server thread of this process)
    monkeypatch.setattr(engine_module, "MAX_PROMPT_LOGPROB_ENTRIES", 8)

    def prepare(**sampling: int) -> Any:
        params = common_pb2.SamplingParams(**sampling)
        return stub.Prepare(worker_pb2.PrepareRequest(prompt="a b c", add_special_tokens=False, sampling=params))

    assert len(prepare().prompt_token_ids) == 3
    prepare(prompt_logprobs=1)  # 6 entries: within the bound
    with pytest.raises(grpc.RpcError) as err:  # before: accepted here, refused only at Admit (a RequestError event)
        prepare(prompt_logprobs=2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt_logprobs: 2 on a 3-token prompt is 9 entries, more than 8" in err.value.details()


def test_the_first_delta_carries_the_prompt_logprobs(stub: Any) -> None:
    prompt = list(stub.Prepare(worker_pb2.PrepareRequest(prompt="Numbers: 0 1 2 3 4 5")).prompt_token_ids)
    params = common_pb2.SamplingParams(max_tokens=3, temperature=0, ignore_eos=True, prompt_logprobs=2, logprobs=1)
    ds = deltas(stub, prompt, params)
    assert [len(d.prompt_logprobs.tokens) for d in ds] == [len(prompt)] + [0] * (len(ds) - 1)
    entries = ds[0].prompt_logprobs.tokens
    assert [e.sampled.token_id for e in entries] == prompt
    assert not entries[0].sampled.HasField("rank") and not entries[0].top
    assert "".join(e.sampled.token for e in entries) == "Numbers: 0 1 2 3 4 5"
    for e in entries[1:]:
        assert e.sampled.rank >= 1 and len(e.top) == 2 and e.sampled.logprob <= 0
        assert e.top[0].logprob >= e.top[1].logprob
        if e.sampled.rank <= 2:  # it is one of the top 2 (at its rank, up to ties)
            assert e.sampled.logprob == pytest.approx(e.top[e.sampled.rank - 1].logprob, abs=1e-6)
        else:
            assert e.sampled.logprob < e.top[1].logprob
    # generated tokens' logprobs are unchanged and carry no rank
    assert all(not t.sampled.HasField("rank") for d in ds for t in d.logprobs.tokens)
    plain = deltas(stub, prompt, common_pb2.SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    assert [t for d in plain for t in d.token_ids] == [t for d in ds for t in d.token_ids]
    assert all(len(d.prompt_logprobs.tokens) == 0 for d in plain)
