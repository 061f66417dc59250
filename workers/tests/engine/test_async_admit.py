"""Async scheduling with admissions and prefill chunks in the steps launched ahead (engine/async_step.py): on a loaded
engine (staggered arrivals, more requests than max_num_seqs, prompts chunked by a small token budget, several adapters
on few device slots, aborts, stop strings, greedy and seeded rows) every request's stream equals the synchronous
engine's (async_compare: tokens, text, finish reasons, usage and cached tokens exact), and steps launched ahead did
admit and continue prefills. Adapters of the step in flight are never evicted by a step launched ahead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from async_compare import assert_same_stream
from factories import make_lora_adapter, make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.factory import EngineOptions, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason

ADAPTERS = ["a0", "a1", "a2", "a3"]
SLOTS = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("admit") / "model")


def make_engine(model: Path, mode: str, *, slots: int = SLOTS, kv_bytes: int = 1 << 20) -> LLMEngine:
    """mode: "sync", "async" (decode-only steps ahead) or "admit" (admissions and prefill chunks ahead too)."""
    engine = create_engine(
        model, EngineOptions(kv_cache_bytes=kv_bytes, max_num_seqs=4, max_num_batched_tokens=24, max_gpu_adapters=slots)
    )
    config = engine.runner.config  # type: ignore[attr-defined]
    for i, name in enumerate(ADAPTERS):
        engine.add_adapter(name, make_lora_adapter(config, rank=4, targets=("q_proj", "v_proj"), seed=i), 4,
                           ("q_proj", "v_proj"))  # fmt: skip
    engine.async_scheduling = mode != "sync"
    engine.async_admit = mode == "admit"
    return engine


def prompt(i: int, n: int) -> list[int]:
    return [3 + (11 * i + 7 * j) % 250 for j in range(n)]


def workload() -> dict[int, list[tuple[Any, ...]]]:
    """call index -> ("add", rid, prompt ids, params, model) / ("abort", rid)."""
    script: dict[int, list[tuple[Any, ...]]] = {}
    lengths = [5, 40, 17, 63, 9, 30, 2, 51, 12, 24, 45, 8, 33, 19]
    for i, n in enumerate(lengths):
        at = 0 if i < 6 else 2 * i + (i % 3)  # a burst beyond max_num_seqs, then staggered arrivals
        if i % 4 == 1:
            params = SamplingParams(temperature=0.8, seed=100 + i, max_tokens=6 + i, ignore_eos=True, top_p=0.95)
        elif i % 4 == 2:
            params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop_token_ids=(40, 41, 42))
        else:
            params = SamplingParams(temperature=0, max_tokens=5 + (3 * i) % 17, ignore_eos=True)
        model = "" if i % 3 == 0 else ADAPTERS[i % len(ADAPTERS)]
        src = 9 if i == 12 else i  # r12 starts with r9's prompt (both on the base): a prefix-cache hit
        script.setdefault(at, []).append(("add", f"r{i}", prompt(src, n), params, model))
    script.setdefault(9, []).append(("abort", "r3"))  # mid-prefill or mid-decode
    script.setdefault(23, []).append(("abort", "r10"))
    return script


def run(
    engine: LLMEngine, script: dict[int, list[tuple[Any, ...]]], hook: Any = None
) -> dict[str, list[RequestOutput]]:
    outs: dict[str, list[RequestOutput]] = {}
    calls, last = 0, max(script)
    while engine.has_work or calls <= last:
        for action in script.get(calls, []):
            if action[0] == "abort":
                engine.abort_request(action[1])
            else:
                engine.add_request(action[1], action[2], action[3], action[4])
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
        if hook is not None:
            hook(engine)
        calls += 1
        assert calls < 1000
    return outs


def test_loaded_engine_streams_equal_sync(model: Path) -> None:
    script = workload()
    want = run(make_engine(model, "sync"), script)
    admit = make_engine(model, "admit")
    got = run(admit, script)
    decode_only = make_engine(model, "async")
    old = run(decode_only, script)
    assert set(got) == set(want) == set(old)
    for rid in want:
        assert_same_stream(got[rid], want[rid], rid)
        assert_same_stream(old[rid], want[rid], rid)
    reasons = {rid: o[-1].finish_reason for rid, o in want.items()}
    assert reasons["r3"] is FinishReason.ABORT and reasons["r10"] is FinishReason.ABORT
    assert FinishReason.LENGTH in reasons.values()
    assert want["r12"][-1].cached_tokens == 16
    # the extension went ahead more often, and with admissions / prefill chunks
    assert admit.num_async_admit_steps >= 5 and decode_only.num_async_admit_steps == 0
    assert admit.num_async_steps > decode_only.num_async_steps
    assert not admit.has_work and admit.block_manager.num_free_blocks == admit.limits.num_kv_blocks


def test_stop_strings_and_low_temperature_rows(model: Path) -> None:
    """Stop strings end requests whose next step was launched ahead with new admissions beside them; rows that stay
    synchronous (logprobs, penalties) sampled on the host after the fed tokens are read."""
    sync = make_engine(model, "sync")
    texts = {}
    for i in range(3):
        sync.add_request(f"t{i}", prompt(i, 6), SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    for rid, outs in run(sync, {0: []}).items():
        texts[rid] = "".join(o.text for o in outs)
    script: dict[int, list[tuple[Any, ...]]] = {}
    for i in range(9):
        t = texts[f"t{i % 3}"]
        stop = (t[len(t) // 2 : len(t) // 2 + 2],) if i % 2 == 0 else ()
        extra: dict[str, Any] = {"logprobs": 2} if i == 5 else {"presence_penalty": 0.4, "seed": 2} if i == 7 else {}
        extra = {"prompt_logprobs": 3} if i == 4 else extra
        temp = 0.7 if i == 7 else 0
        params = SamplingParams(temperature=temp, max_tokens=24, ignore_eos=True, stop=stop, **extra)
        script.setdefault(i, []).append(("add", f"s{i}", prompt(i % 3, 6 + 9 * (i // 3)), params, ""))
    want = run(make_engine(model, "sync"), script)
    admit = make_engine(model, "admit")
    finished_ahead: set[str] = set()
    finish = admit._finish_ahead

    def finish_ahead(ahead: Any, launched: Any, into: list) -> None:
        if launched.logits is not None:  # sampled on the host after the read
            finished_ahead.update(c.seq.request_id for c in ahead.chunks if c.samples)
        finish(ahead, launched, into)

    admit._finish_ahead = finish_ahead  # type: ignore[method-assign]
    got = run(admit, script)
    for rid in want:
        assert_same_stream(got[rid], want[rid], rid)
    assert sum(o[-1].finish_reason is FinishReason.STOP for o in want.values()) >= 3
    assert admit.num_async_admit_steps > 0
    assert want["s4"][0].prompt_logprobs is not None and len(want["s4"][0].prompt_logprobs) == 6 + 9
    # rows that need the host (prompt logprobs, logprobs) were admitted by steps launched ahead (then sampled there;
    # while such a row runs no step goes ahead: s7, penalties, joins a synchronous step)
    assert {"s4", "s5"} <= finished_ahead


def test_adapters_of_the_step_in_flight_stay_resident(model: Path) -> None:
    """With one slot per running adapter taken, a step launched ahead admits no request that would evict an adapter
    the step in flight still reads (its rows may have finished already)."""
    engine = make_engine(model, "admit")
    seen: dict[str, Any] = {"checks": 0, "flight": None}
    prepare, launch = engine.runner.prepare_adapters, engine._launch_ahead

    def launch_ahead(ahead: Any, flight: Any) -> Any:
        seen["flight"] = flight
        try:
            return launch(ahead, flight)
        finally:
            seen["flight"] = None

    def checked(names: Any, keep: Any) -> dict[str, int]:
        flight = seen["flight"]
        before = dict(engine.runner.adapter_slots)  # type: ignore[attr-defined]
        slots = prepare(names, keep)
        if flight is not None:
            for seq in flight.seqs:
                if seq.adapter is not None:
                    seen["checks"] += 1
                    assert engine.runner.adapter_slots.get(seq.adapter) == before[seq.adapter]  # type: ignore[attr-defined]
        return slots

    engine.runner.prepare_adapters = checked  # type: ignore[method-assign]
    engine._launch_ahead = launch_ahead  # type: ignore[method-assign]
    script: dict[int, list[tuple[Any, ...]]] = {}
    vocab = engine.tokenizer.vocab_size
    for i in range(12):  # short requests on 4 adapters through 2 slots; stop tokens end rows whose next step went
        # ahead (a length end is known before: such rows stay out of it), while others wait to be admitted
        params = SamplingParams(temperature=1.0, seed=i, max_tokens=8, ignore_eos=True,
                                stop_token_ids=tuple(range(i % 2, vocab, 3)))  # fmt: skip
        script.setdefault(i // 2, []).append(("add", f"x{i}", prompt(i, 4 + i % 5), params, ADAPTERS[i % 4]))
    got = run(engine, script)
    want = run(make_engine(model, "sync"), script)
    for rid in want:
        assert_same_stream(got[rid], want[rid], rid)
    assert seen["checks"] > 0 and engine.num_async_admit_steps > 0


def test_abort_of_a_request_admitted_ahead(model: Path) -> None:
    """A request admitted in a step launched ahead and aborted before its tokens are read: its blocks return."""
    engine = make_engine(model, "admit")
    greedy = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    engine.add_request("a", prompt(0, 5), greedy)
    outs: list[RequestOutput] = []
    for _ in range(3):
        outs += engine.step()
    assert engine._inflight is not None
    engine.add_request("b", prompt(1, 60), greedy)  # chunked: admitted ahead, mid-prefill when aborted
    before = engine.num_async_admit_steps
    outs += engine.step()
    assert engine.num_async_admit_steps == before + 1 and engine.num_running == 2
    assert engine.abort_request("b")
    engine.abort_request("a")
    while engine.has_work:
        outs += engine.step()
    assert [o.finish_reason for o in outs if o.request_id == "b"] == [FinishReason.ABORT]
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
