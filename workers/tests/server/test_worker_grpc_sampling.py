"""logit_bias, min_p and min_tokens through the worker's gRPC API (a tiny random Llama, vocabulary 320): parsed
from the proto, logit_bias ids checked against the vocabulary (INVALID_ARGUMENT naming logit_bias), and applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import one_request, serving
from inlaid_worker.engine.sampling_params import SamplingError
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.server.convert import sampling_from_proto

FINISH = common_pb2.FinishReason
VOCAB = 320


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    model = make_tiny_llama(tmp_path_factory.mktemp("grpc-sampling") / "model", vocab=VOCAB)
    with serving(model, kv_cache_bytes=1 << 20) as (stub, _):
        yield stub


def sampling(**kw: Any) -> common_pb2.SamplingParams:
    bias = kw.pop("logit_bias", None)
    p = common_pb2.SamplingParams(**kw)
    if bias is not None:
        for t, b in bias.items():
            p.logit_bias.bias[t] = b
    return p


def run(stub: Any, prompt: list[int], params: common_pb2.SamplingParams) -> tuple[list[int], Any]:
    """(the tokens, the last event): a delta with a finish reason, or an error."""
    deltas, error = one_request(stub, prompt, params)
    return [t for d in deltas for t in d.token_ids], deltas[-1] if error is None else error


def prompt_ids(stub: Any) -> list[int]:
    return list(stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Numbers: 0 1 2 3")).prompt_token_ids)


def test_the_proto_fields_reach_the_sampling_params() -> None:
    p = sampling(max_tokens=9, min_p=0.25, min_tokens=4, logit_bias={7: -100.0, 3: 2.5})
    s = sampling_from_proto(p, 9, VOCAB)
    assert s.logit_bias == ((3, 2.5), (7, -100.0)) and s.min_p == 0.25 and s.min_tokens == 4
    unset = sampling_from_proto(sampling(max_tokens=9), 9, VOCAB)
    assert unset.logit_bias == () and unset.min_p == 0.0 and unset.min_tokens == 0
    with pytest.raises(SamplingError, match="^logit_bias: token id 320"):
        sampling_from_proto(sampling(logit_bias={320: 1.0}), 9, VOCAB)


def test_logit_bias_outside_the_vocabulary_is_invalid_argument(stub: Any) -> None:
    bad = sampling(logit_bias={5: 1.0, VOCAB: 1.0})
    with pytest.raises(grpc.RpcError) as err:
        stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="hi", sampling=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("logit_bias: token id 320 is outside the vocabulary (size 320)")
    _, ev = run(stub, [5, 6], sampling(max_tokens=2, logit_bias={999: 1.0}))
    assert ev.message.startswith("logit_bias: token id 999")
    with pytest.raises(grpc.RpcError) as err:
        stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="hi", sampling=sampling(min_p=1.5)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_p" in err.value.details()


def test_the_parameters_change_the_output(stub: Any) -> None:
    prompt = prompt_ids(stub)
    plain, _ = run(stub, prompt, sampling(max_tokens=6, temperature=0, ignore_eos=True))
    forced = next(t for t in range(10, VOCAB) if t not in plain)
    got, _ = run(stub, prompt, sampling(max_tokens=6, temperature=0, ignore_eos=True, logit_bias={forced: 100.0}))
    assert got == [forced] * 6
    stop = sampling(max_tokens=6, temperature=0, ignore_eos=True, stop_token_ids=[plain[0]])
    assert run(stub, prompt, stop)[0] == [plain[0]]
    stop.min_tokens = 3
    got, _ = run(stub, prompt, stop)
    assert plain[0] not in got[:3] and len(got) >= 4
    sampled = [run(stub, prompt, sampling(max_tokens=1, temperature=1.5, seed=s, min_p=1.0))[0][0] for s in range(4)]
    assert sampled == [plain[0]] * 4  # min_p 1: only the most likely token is left
