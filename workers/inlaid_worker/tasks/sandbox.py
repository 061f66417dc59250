"""Run generated code against its tests in a subprocess: time limit, memory limit, no network.

The child is a fresh `python -I` in an empty temporary directory with a minimal environment; a preamble
sets resource limits and replaces `socket.socket` so that any connection attempt raises. This guards
against accidents of generated code, not against a determined attacker (use a container for that).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_PREAMBLE = """\
import resource as _r, socket as _s
_r.setrlimit(_r.RLIMIT_AS, ({mem}, {mem}))
_r.setrlimit(_r.RLIMIT_CPU, ({cpu}, {cpu}))
def _no_network(*a, **k):
    raise OSError("network access is disabled in the sandbox")
_s.socket = _no_network
_s.create_connection = _no_network
_s.getaddrinfo = _no_network
del _r, _s
"""


@dataclass(frozen=True)
class RunResult:
    passed: bool
    reason: str  # "passed" | "failed" | "timeout"
    stderr: str


def run_python(program: str, timeout_s: float = 5.0, memory_bytes: int = 1 << 30) -> RunResult:
    """Execute `program`; passed means exit status 0 within `timeout_s` seconds."""
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    source = _PREAMBLE.format(mem=memory_bytes, cpu=int(timeout_s) + 1) + program
    with tempfile.TemporaryDirectory(prefix="inlaid-sandbox-") as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(source, encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(path)],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return RunResult(False, "timeout", "")
    stderr = proc.stderr.decode("utf-8", "replace")[-2000:]
    return RunResult(proc.returncode == 0, "passed" if proc.returncode == 0 else "failed", stderr)
