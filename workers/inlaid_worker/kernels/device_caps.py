"""Which GPU is this: whether a device can run the Hopper-only (sm_90) kernel kinds, and whether the device tables
measured on the H200 apply to it. The kernel modules ask here instead of reading CUDA properties themselves."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def sm_major(index: int) -> int:
    """The compute capability's major number of CUDA device `index` (read once per device, off the per-call path)."""
    return torch.cuda.get_device_capability(index)[0]


@functools.cache
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """The SM count of a CUDA device (read once per device, off the per-call path; no index: the current device)."""
    return _sms(torch.cuda.current_device() if device.index is None else device.index)


def hopper_device(device: torch.device) -> bool:
    """Can `device` run the Hopper-only kinds? CUDA: compute capability 9.x. True off CUDA and under TRITON_INTERPRET
    (there the twins run, so the CPU tests keep every candidate)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return sm_major(device.index or 0) == 9


def need_sm90(device: torch.device, kind: str) -> None:
    """Refuse a Hopper-only kernel kind on a CUDA device without sm_90. The wgmma / TMA Gluon kernels compile only for
    sm_90 (sm_80 / sm_89 lack wgmma, sm_100 / sm_120 no longer have it); elsewhere LLVM aborts the process (no Python
    exception the tuner could catch), so refuse first with a ValueError."""
    if not hopper_device(device):
        raise ValueError(f"kernel kind {kind!r} needs an sm_90 GPU (Hopper wgmma / TMA)")


# Device tables measured on one device (paged_decode's ROW_TABLE, SKIP_EMPTY_UPTO, TILES_FIXED, FEWER_PARTS) are keyed
# by the name of the device they were measured on, and apply to a device only through measured_device: that name, or
# a board variant of the same chip (the name, a space and more: "NVIDIA H200 NVL", the PCIe / NVLink-bridge H200: by
# NVIDIA's spec sheets the same GH100 die and 141 GB HBM3e at 4.8 TB/s, a lower power cap), with the SM count it was
# measured with. What the tables pick (partitions per SM, tiles a program walks, empty partitions skipped, "row"'s ~8
# programs an SM) follows from the SM count and the memory system, which such a variant shares, so the measured picks
# plausibly transfer (measured on the H200 SXM only: margins of 1-4% may shrink at its lower clocks). Not matched: a
# MIG slice (fewer SMs), other chips (H100: 3.35 TB/s HBM3; GH200: another name), which keep the untuned defaults.
MEASURED_SMS: dict[str, int] = {"NVIDIA H200": 132}


def measured_device(name: str, sms: int | None) -> str | None:
    """The MEASURED_SMS key whose device tables apply to a CUDA device of this name and SM count, or None (see above).
    sms None (a properties stub without a count) decides by the name alone."""
    if " MIG " in f"{name} ":
        return None
    for key, count in MEASURED_SMS.items():
        if (name == key or name.startswith(key + " ")) and sms in (None, count):
            return key
    return None


def measured_key(device: torch.device) -> str | None:
    """measured_device of a CUDA device's properties."""
    props = torch.cuda.get_device_properties(device)
    return measured_device(props.name, getattr(props, "multi_processor_count", None))
