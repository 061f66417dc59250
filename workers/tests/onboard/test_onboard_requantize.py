"""Background re-quantization while serving: a generation stream keeps producing tokens through every layer
swap, the served layers equal an offline `update_checkpoint` bit for bit, failures restore the old weights."""

from __future__ import annotations

import json
import queue
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.config import WorkerConfig
from inlaid_worker.engine.engine import RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.onboard.layer_swap import MATRICES, weight_pointers
from inlaid_worker.onboard.manager import AddRequest, OnboardManager, RequantizeBusy
from inlaid_worker.onboard.setup import versions_of
from inlaid_worker.quant import (
    QuantSpec,
    TaskData,
    dequantize_packed,
    quantize_checkpoint,
    read_checkpoint,
    update_checkpoint,
)
from inlaid_worker.quant.calib import load_calibration
from inlaid_worker.server.app import build_engine
from inlaid_worker.server.engine_loop import AdmitError, EngineLoop
from safetensors.torch import load_file, save_file

SPEC = QuantSpec(bits=4, group_size=32, act_order=True, static_groups=True)
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
LAYERS = 3


@dataclass(frozen=True)
class Fixture:
    base: Path
    adapters: dict[str, Path]
    calib: dict[str, Path]
    ckpt: Path


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("onboard")
    base = make_tiny_llama(root / "base", layers=LAYERS, max_positions=1024)
    adapters = {n: make_random_adapter(root / f"adapter_{n}", base, rank=4, alpha=8, targets=TARGETS, seed=i)
                for i, n in enumerate("abc")}
    calib = {}
    for i, n in enumerate("abc"):
        calib[n] = root / f"calib_{n}.jsonl"
        lines = [{"text": f"Task {n} sample {j}: the capital of France is Paris, 2 + {j} = {2 + j}."} for j in range(4 + i)]
        lines.append({"messages": [{"role": "user", "content": f"Hello {n}"}, {"role": "assistant", "content": "Hi"}]})
        calib[n].write_text("\n".join(json.dumps(x) for x in lines))
    quantize_checkpoint(base, root / "ckpt_ab", "mlgptq", SPEC, [_task(base, adapters, calib, n) for n in "ab"])
    return Fixture(base, adapters, calib, root / "ckpt_ab")


def _task(base: Path, adapters: dict[str, Path], calib: dict[str, Path], name: str) -> TaskData:
    from transformers import AutoTokenizer

    seqs = load_calibration(calib[name], AutoTokenizer.from_pretrained(base), 256)
    return TaskData(name, adapters[name], seqs)


@dataclass
class Served:
    loop: EngineLoop
    manager: OnboardManager
    cfg: WorkerConfig


def _serve(fx: Fixture, store: Path) -> Served:
    cfg = WorkerConfig(model=str(fx.base), port=0, kv_cache_bytes=4 << 20, checkpoint=str(fx.ckpt),
                       checkpoint_store=str(store))
    engine = build_engine(cfg, fx.base)
    loop = EngineLoop(engine)
    loop.start()
    manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), fx.base, engine.tokenizer.hf)
    return Served(loop, manager, cfg)


def _values(layers: tuple) -> list[torch.Tensor]:
    return [getattr(layer, name).clone() for layer in layers for name in MATRICES]  # dense on the torch backend


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _add(fx: Fixture, name: str) -> AddRequest:
    return AddRequest(name, str(fx.adapters[name]), str(fx.calib[name]))


def _assert_failed_and_restored(s: Served, events: list, message: str, original: tuple,
                                values: list[torch.Tensor]) -> None:  # fmt: skip
    """The job's last event is its failure naming `message`; the served layers are the ones before it (`original`,
    whose tensors held `values`), copied back, and no new version was made."""
    assert events[-1].stage == "failed" and message in events[-1].message
    assert s.loop.engine.runner.weights.layers is original
    assert _equal(_values(original), values)  # the swapped layers' tensors were copied back
    assert s.manager.versions.current().number == 0


def test_requantize_while_generating_matches_offline_update(fx: Fixture, tmp_path: Path) -> None:
    s = _serve(fx, tmp_path / "store")
    try:
        sid, outbox = s.loop.open_session()
        sampling = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
        tokens_at_swap: list[int] = []
        produced = {"tokens": 0, "finished": 0, "errors": 0}

        def drain() -> None:
            while True:
                try:
                    ev = outbox.get_nowait()
                except queue.Empty:
                    return
                if isinstance(ev, AdmitError):
                    produced["errors"] += 1
                elif isinstance(ev, RequestOutput):
                    produced["tokens"] += len(ev.token_ids)
                    produced["finished"] += ev.finish_reason is not None

        s.manager.on_layer_swapped = lambda _layer: tokens_at_swap.append(produced["tokens"])
        admitted = 0
        for _ in range(4):
            s.loop.admit(sid, f"r{admitted}", [5, 6, 7, 8], sampling, "")
            admitted += 1
        weights = s.loop.engine.runner.weights
        addresses = weight_pointers(weights.layers)
        job = s.manager.submit([_add(fx, "c")], [])
        assert s.manager.submit([_add(fx, "c")], []) is job  # a retry attaches to the running job
        with pytest.raises(RequantizeBusy):
            s.manager.submit([_add(fx, "a"), _add(fx, "b")], ["a"])
        deadline = time.monotonic() + 60
        while not job.finished and time.monotonic() < deadline:
            drain()
            if admitted - produced["finished"] < 4:  # keep the batch full while re-quantizing
                s.loop.admit(sid, f"r{admitted}", [5, 6, 7, 8], sampling, "")
                admitted += 1
            time.sleep(0.005)
        while produced["finished"] < admitted and time.monotonic() < deadline:
            drain()
            time.sleep(0.01)
        events = job.events
        assert [e.stage for e in events] == ["planned"] + ["layer"] * LAYERS + ["done"], events[-1].message
        assert events[-1].checkpoint_version == 1 and events[-1].tasks == ("a", "b", "c")
        assert produced["errors"] == 0 and produced["finished"] == admitted
        assert produced["tokens"] == admitted * 40
        assert len(tokens_at_swap) == LAYERS
        assert tokens_at_swap[-1] > tokens_at_swap[0]  # tokens came out between the first and the last swap

        offline = tmp_path / "offline"
        update_checkpoint(fx.ckpt, fx.base, offline, add=[_task(fx.base, fx.adapters, fx.calib, "c")])
        served_dir = s.manager.versions.current().path
        got, want = read_checkpoint(served_dir)[0], read_checkpoint(offline)[0]
        assert got.keys() == want.keys()
        for k in want:
            for f in ("qweight", "qzeros", "scales", "g_idx"):
                assert torch.equal(getattr(got[k], f), getattr(want[k], f)), (k, f)
        layers = s.loop.engine.runner.weights.layers
        # copied in place: the same weights object, every tensor at its address (CUDA graphs stay valid)
        assert s.loop.engine.runner.weights is weights and weight_pointers(layers) == addresses
        assert (s.manager.inplace_swaps, s.manager.replaced_swaps) == (LAYERS, 0)
        for i in range(LAYERS):
            q = [dequantize_packed(want[f"model.layers.{i}.self_attn.{p}"]) for p in ("q_proj", "k_proj", "v_proj")]
            assert torch.equal(layers[i].qkv, torch.cat(q))
            assert torch.equal(layers[i].down, dequantize_packed(want[f"model.layers.{i}.mlp.down_proj"]))
        before = read_checkpoint(fx.ckpt)[0]
        assert not torch.equal(before["model.layers.0.self_attn.q_proj"].qweight,
                               want["model.layers.0.self_attn.q_proj"].qweight)  # adding c changed weights

        again = s.manager.submit([_add(fx, "c")], [])  # idempotent: already in the checkpoint
        assert [e.stage for e in again.events] == ["done"] and again.events[0].checkpoint_version == 1
    finally:
        s.loop.stop()


def test_restarted_worker_serves_the_latest_version(fx: Fixture, tmp_path: Path) -> None:
    s = _serve(fx, tmp_path / "store")
    try:
        job = s.manager.submit([_add(fx, "c")], [])
        list(job.follow())
        served = [layer.qkv.clone() for layer in s.loop.engine.runner.weights.layers]
    finally:
        s.loop.stop()
    engine = build_engine(s.cfg, fx.base)  # a fresh worker on the same store
    assert versions_of(s.cfg).current().number == 1
    assert all(torch.equal(a.qkv, b) for a, b in zip(engine.runner.weights.layers, served, strict=True))


def test_failure_mid_job_restores_previous_weights(fx: Fixture, tmp_path: Path) -> None:
    s = _serve(fx, tmp_path / "store")
    try:
        original = s.loop.engine.runner.weights.layers
        values = _values(original)

        def boom(layer: int) -> None:
            if layer == 1:
                raise RuntimeError("disk full")

        s.manager.on_layer_swapped = boom
        job = s.manager.submit([_add(fx, "c")], [])
        _assert_failed_and_restored(s, list(job.follow()), "disk full", original, values)
    finally:
        s.loop.stop()


def test_bad_requests_are_refused_before_starting(fx: Fixture, tmp_path: Path) -> None:
    s = _serve(fx, tmp_path / "store")
    try:
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n")
        with pytest.raises(ValueError, match="empty"):
            s.manager.submit([AddRequest("c", str(fx.adapters["c"]), str(empty))], [])
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "ok"}\nnot json\n')
        with pytest.raises(ValueError, match="line|:2"):
            s.manager.submit([AddRequest("c", str(fx.adapters["c"]), str(bad))], [])
        with pytest.raises(ValueError, match="does not exist"):
            s.manager.submit([AddRequest("c", str(tmp_path / "nope"), str(fx.calib["c"]))], [])
        with pytest.raises(ValueError, match="no task would remain"):
            s.manager.submit([], ["a", "b"])
        nan = shutil.copytree(fx.adapters["c"], tmp_path / "nan_c")
        tensors = load_file(str(nan / "adapter_model.safetensors"))
        name = "base_model.model.model.layers.2.mlp.up_proj.lora_A.weight"
        tensors[name][0, 0] = float("nan")
        save_file(tensors, str(nan / "adapter_model.safetensors"))
        with pytest.raises(ValueError, match=rf"task 'c': tensor '{re.escape(name)}' holds non-finite values"):
            s.manager.submit([AddRequest("c", str(nan), str(fx.calib["c"]))], [])
        assert s.manager.running is None
    finally:
        s.loop.stop()


def test_quantizer_process_failure_restores_previous_weights(fx: Fixture, tmp_path: Path) -> None:
    """The child process fails mid-job (a stored Hessian is gone): the parent reports it and restores."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(fx.ckpt, ckpt)
    (ckpt / "hessians" / "tasks" / "b" / "layer-00001.safetensors").unlink()
    s = _serve(Fixture(fx.base, fx.adapters, fx.calib, ckpt), tmp_path / "store")
    try:
        assert s.manager.background.mode == "process"
        original = s.loop.engine.runner.weights.layers
        values = _values(original)
        events = list(s.manager.submit([_add(fx, "c")], []).follow())
        assert [e.layer for e in events if e.stage == "layer"] == [0]  # layer 0 swapped in, then the failure
        _assert_failed_and_restored(s, events, "layer-00001", original, values)
    finally:
        s.loop.stop()


def test_finite_adapter_too_large_for_float16_is_refused_before_starting(fx: Fixture, tmp_path: Path) -> None:
    """Finite but huge weights (1e30 in layer 0's down_proj A and B) are refused by validation (lora.magnitude),
    naming the first such tensor: no re-quantization starts, nothing is swapped. Before the rule they passed, were
    served, and failed in the quantizer (their delta overflowed float32 in the calibration forward)."""
    huge = shutil.copytree(fx.adapters["c"], tmp_path / "huge_c")
    tensors = load_file(str(huge / "adapter_model.safetensors"))
    for which in "AB":
        name = f"base_model.model.model.layers.0.mlp.down_proj.lora_{which}.weight"
        tensors[name] = torch.full_like(tensors[name], 1e30)
    save_file(tensors, str(huge / "adapter_model.safetensors"))
    s = _serve(fx, tmp_path / "store")
    try:
        original = s.loop.engine.runner.weights.layers
        message = r"task 'c': tensor '.*layers\.0\.mlp\.down_proj\.lora_[AB]\.weight' holds values up to 1e\+30"
        with pytest.raises(ValueError, match=message):
            s.manager.submit([AddRequest("c", str(huge), str(fx.calib["c"]))], [])
        assert s.manager.running is None
        assert s.loop.engine.runner.weights.layers is original
        assert s.manager.versions.current().number == 0
    finally:
        s.loop.stop()
