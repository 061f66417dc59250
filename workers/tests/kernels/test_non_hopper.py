"""GPUs other than the H200 (A100 / L40S / RTX 4090: sm_80 / sm_89; Blackwell: sm_100 / sm_120): the tuner offers them
no Hopper-only kernel kind (Gluon wgmma / TMA, which would only fail to compile there), a shipped H200 pick never
reaches them, and paged_decode's measured H200 defaults apply to the H200's board variants only (device_caps.measured_device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inlaid_worker.kernels import device_caps as caps
from inlaid_worker.kernels import paged_decode as pd
from inlaid_worker.kernels import qmm_tuned
from inlaid_worker.kernels import quant_matmul_config as qmc
from inlaid_worker.kernels.gptq_packing import GPTQWeight

KERNELS = Path(qmc.__file__).parent
# kinds whose kernels are plain Triton (quant_gemv, quant_hgemv*, quant_mma, quant_matmul's tile) or cuBLAS
PORTABLE = {"gemv", "hgemv", "hgemvp", "hgemvr", "hgemvrq", "hgemvrb", "hgemv3", "mma", "tile", "dequant"}
SHAPES = ((11008, 4096, 128), (4096, 11008, 128), (4096, 4096, 64), (4100, 4096, 128), (4096, 4096, 32))
MS = (1, 2, 3, 4, 5, 8, 16, 24, 32, 64, 128, 256, 512, 1000)


def test_without_hopper_the_candidates_are_todays_minus_the_hopper_kinds() -> None:
    """hopper=False: the same list in the same order without any "tc*" kind, never empty, the same untuned default
    (first candidate), and only plain-Triton / cuBLAS kinds left, at every M bucket, 3 and 4 bits, fp16 and bf16."""
    dropped = set()
    for n, k, group in SHAPES:
        for m in MS:
            for bits in (3, 4):
                for dtype in (torch.float16, torch.bfloat16):
                    full = qmc.candidate_configs(m, n, k, group, bits, dtype)
                    port = qmc.candidate_configs(m, n, k, group, bits, dtype, hopper=False)
                    where = (m, n, k, group, bits, dtype)
                    assert port == [c for c in full if not c.kind.startswith("tc")], where
                    assert port and port[0] == full[0], where
                    assert {c.kind for c in port} <= PORTABLE, where
                    assert qmc.candidate_configs(m, n, k, group, bits, dtype, hopper=True) == full, where
                    dropped |= {c.kind for c in full} - {c.kind for c in port}
    # not vacuous: the Hopper kernels of every module are offered with hopper=True and withdrawn without
    assert {"tc", "tc2", "tcf", "tcf2", "tcv", "tcl", "tcls", "tcw", "tcwn", "tcs2a"} <= dropped, dropped


def test_hopper_only_matches_the_kernel_modules() -> None:
    """hopper_only's rule ("tc*") against the code: the modules behind the "tc*" kinds use Hopper's wgmma, those
    behind the portable kinds do not (nor Gluon's Hopper module at all)."""
    assert all(qmc.hopper_only(k) for k in ("tc", "tcf", "tc2", "tcf2", "tcv", "tcv2", "tcl", "tclp", "tcls", "tcw",
                                           "tcwn", "tcwx", "tcs", "tcss", "tcsa", "tcs2a"))  # fmt: skip
    assert not any(qmc.hopper_only(k) for k in PORTABLE)
    for name in ("quant_tcg", "quant_tcl", "quant_tcv", "quant_tcw", "quant_tcs"):
        assert "warpgroup_mma" in (KERNELS / f"{name}.py").read_text(), name
    for name in ("quant_gemv", "quant_hgemv", "quant_hgemvr", "quant_hgemv3", "quant_mma", "quant_common", "pdl"):
        src = (KERNELS / f"{name}.py").read_text()
        assert "warpgroup_mma" not in src and "nvidia.hopper" not in src and "nvidia import hopper" not in src, name


@pytest.mark.parametrize("cap,want", [((8, 0), False), ((8, 6), False), ((8, 9), False), ((9, 0), True),
                                      ((10, 0), False), ((12, 0), False)])  # fmt: skip
def test_hopper_device_is_capability_9(monkeypatch: pytest.MonkeyPatch, cap: tuple[int, int], want: bool) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    caps.sm_major.cache_clear()  # the capability is cached per device index (read once, off the per-call path)
    assert caps.hopper_device(torch.device("cuda", 0)) is want
    caps.sm_major.cache_clear()
    assert caps.hopper_device(torch.device("cpu")) is True  # the CPU tests keep every candidate (twins run there)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert caps.hopper_device(torch.device("cuda", 0)) is True
    assert qmc.hopper_device is caps.hopper_device  # the tuner asks the same question (pick_config)


class _FakeCudaX:
    """What pick_config reads of x2 on a CUDA device (no CUDA here): the kernels are the `run` stub."""

    def __init__(self, m: int, k: int, dtype: torch.dtype) -> None:
        self.shape = (m, k)
        self.is_cuda = True
        self.device = torch.device("cuda", 0)
        self.dtype = dtype


def _entry(kind: str) -> tuple[tuple, qmc.QMMConfig]:
    table = qmm_tuned.parse_table(json.loads((qmm_tuned.TUNED_DIR / "nvidia-h200.json").read_text()))
    return next((key, c) for key, c in table.items() if c.kind == kind)


@pytest.mark.parametrize("kind", ["tc2", "tcl", "tcw"])
def test_the_tuner_never_tries_nor_takes_a_hopper_kind_off_hopper(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """pick_config on a CUDA device: with hopper_device False (A100 etc.) no Hopper kind is timed and a shipped H200
    pick of one is not taken even where the H200 table is loaded; on the H200 the shipped pick is taken untimed."""
    (dtype, mb, n, k, bits, group), pick = _entry(kind)
    w = GPTQWeight(torch.zeros(k * bits // 32, 8, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                   torch.zeros(1, 8, dtype=torch.float16), None, bits, group, False, 1, k, n)  # fmt: skip
    x2 = _FakeCudaX(mb, k, getattr(torch, dtype))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")  # the H200 table loads
    monkeypatch.delenv("INLAID_QMM_TUNED", raising=False)
    monkeypatch.setattr(qmc, "time_cold_ms", lambda fn, device: fn() or 1.0 + len(timed) * 1e-3)
    timed: list[qmc.QMMConfig] = []
    for hopper in (False, True):
        monkeypatch.setattr(qmc, "_TUNED", {})
        monkeypatch.setattr(qmc, "TUNE_LOG", {})
        monkeypatch.setattr(qmc, "hopper_device", lambda device, hopper=hopper: hopper)
        timed.clear()
        best = qmc.pick_config(x2, w, timed.append, lambda c: True)  # type: ignore[arg-type]
        if hopper:
            assert best == pick and not timed, "the H200 takes its shipped pick without tuning"
        else:
            assert timed and not [c for c in timed if qmc.hopper_only(c.kind)], "a Hopper kind was timed"
            assert not qmc.hopper_only(best.kind) and best != pick and best in timed


@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-80GB", "NVIDIA L40S", "NVIDIA GeForce RTX 4090",
                                  "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200 NVL"])  # fmt: skip
def test_the_h200_table_is_keyed_by_its_exact_device_name(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """qmm_tuned loads kernels/tuned/<slug of the device name>.json: another device (even an H200 board variant)
    finds no table, so gets no shipped pick; the H200 gets its entries."""
    monkeypatch.delenv("INLAID_QMM_TUNED", raising=False)
    (dtype, mb, n, k, bits, group), pick = _entry("tc2")
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert qmm_tuned.shipped_pick(cuda, getattr(torch, dtype), mb, n, k, bits, group) == pick
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert not (qmm_tuned.TUNED_DIR / f"{qmm_tuned.device_slug(name)}.json").exists()
    assert qmm_tuned.shipped_pick(cuda, getattr(torch, dtype), mb, n, k, bits, group) is None


@pytest.mark.parametrize("name,sms,want", [
    ("NVIDIA H200", 132, "NVIDIA H200"),
    ("NVIDIA H200 NVL", 132, "NVIDIA H200"),  # the same chip on another board: the measured picks apply
    ("NVIDIA H200 141GB HBM3e", 132, "NVIDIA H200"),
    ("NVIDIA H200", None, "NVIDIA H200"),  # a properties stub without an SM count: the name decides
    ("NVIDIA H200", 16, None),  # a MIG slice that reports the plain name: fewer SMs, other partition counts
    ("NVIDIA H200 MIG 1g.18gb", 16, None),
    ("NVIDIA H200 MIG 3g.71gb", None, None),
    ("NVIDIA H200 NVL", 114, None),
    ("NVIDIA H2000", 132, None),
    ("NVIDIA GH200 480GB", 132, None),
    ("NVIDIA H100 80GB HBM3", 132, None),
    ("NVIDIA A100-SXM4-80GB", 108, None),
    ("NVIDIA L40S", 142, None),
])  # fmt: skip
def test_measured_device(name: str, sms: int | None, want: str | None) -> None:
    assert caps.measured_device(name, sms) == want


def test_the_decode_defaults_follow_measured_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """row_for, skip_empty_for, tiles_config and choose_num_parts key their tables by measured_device: an H200 NVL
    (132 SMs) gets the H200's measured defaults, a 16-SM slice named "NVIDIA H200" and an L40S the untuned ones."""
    for var in ("INLAID_DECODE_ROW", "INLAID_DECODE_ATTN", "INLAID_DECODE_SKIP_EMPTY", "INLAID_DECODE_TILES_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pd, "ROW", None)
    monkeypatch.setattr(pd, "SKIP_EMPTY", None)
    monkeypatch.setattr(pd, "TILES_FIXED", {"NVIDIA H200": {1: (64, 4, 2)}})

    class Props:
        name = ""
        multi_processor_count = 0

    monkeypatch.setattr(pd.torch.cuda, "get_device_properties", lambda device: Props)
    cuda = torch.device("cuda", 0)
    h200 = pd.ROW_TABLE["NVIDIA H200"]
    for name, sms, measured in (("NVIDIA H200", 132, True), ("NVIDIA H200 NVL", 132, True),
                                ("NVIDIA H200", 16, False), ("NVIDIA L40S", 142, False)):  # fmt: skip
        Props.name, Props.multi_processor_count = name, sms
        assert [pd.row_for(b, cuda) for b in (1, 2, 4, 8)] == ([h200.get(b) for b in (1, 2, 4, 8)] if measured
                                                               else [None] * 4), name  # fmt: skip
        assert pd.row_rope_for(1, 1, cuda) == (h200[1] if measured else None), name
        assert [pd.skip_empty_for(b, cuda) for b in (1, 2, 4)] == ([1, 1, 0] if measured else [0, 0, 0]), name
        assert pd.tiles_config(1, cuda) == ((64, 4, 2) if measured else None), name
        fewer = pd.FEWER_PARTS["NVIDIA H200"] if measured else ()
        assert [pd.choose_num_parts(s, 32, cuda) for s in (1, 2, 3, 4)] == [pd.parts_for(s, 32, sms, fewer)
                                                                            for s in (1, 2, 3, 4)], name  # fmt: skip
    Props.name, Props.multi_processor_count = "NVIDIA H200 NVL", 132
    assert [pd.choose_num_parts(s, 32, cuda) for s in (1, 2, 3, 4)] == [32, 16, 4, 4]  # the H200's measured counts


@pytest.mark.parametrize("kind", ["tcs", "tcs2", "tcv", "tcw", "tc2", "tcl"])
def test_a_hopper_kind_refuses_other_gpus_before_compiling(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Compiling these Gluon kernels for sm_80 / sm_100 aborts the process in LLVM (review of session 12): a direct
    launch on such a device must raise a ValueError first (here a fake CUDA input on a capability-8 device)."""
    from inlaid_worker.kernels import quant_matmul as qm

    monkeypatch.setattr(caps, "sm_major", lambda index: 8)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    class FakeCuda:  # only what the dispatch reads before the capability check
        is_cuda = True
        device = torch.device("cuda", 0)

    cfg = qmc.QMMConfig(8, 128, 128, 4, 4, 4, True, kind)
    with pytest.raises(ValueError, match="needs an sm_90"):
        qm.launch_quant_matmul(FakeCuda(), None, cfg, None)  # type: ignore[arg-type]


def test_a_tcsx_call_with_operand_ordered_x_is_refused_off_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama_fast's TCSX_XP path calls launch_tcsx_kind directly (not launch_quant_matmul): the sm_90 check is there
    too, so a tcsx pick that reached another GPU raises instead of aborting in LLVM."""
    from types import SimpleNamespace

    from inlaid_worker.kernels.quant_matmul import launch_tcsx_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    caps.sm_major.cache_clear()
    xp = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0), shape=(32, 4096))
    cfg = QMMConfig(32, 128, 128, 1, 4, 4, kind="tcsx")
    try:
        with pytest.raises(ValueError, match="sm_90"):
            launch_tcsx_kind(None, None, cfg, None, xp=xp)  # type: ignore[arg-type]
    finally:
        caps.sm_major.cache_clear()  # the fake capability must not stay cached for later GPU tests
