"""A fork server for the e2e tests' Python workers: imports the worker's heavy third-party dependencies once
(torch, transformers and its AutoTokenizer: ~90% of a worker's start-up), then forks one process per request
that runs `python -m <module> <args>` (runpy, as `-m` does) or `python -c <code> <args>` with the request's
environment and working directory.

Usage: `python worker_zygote.py SOCKET_PATH`. It prints `{"event":"zygote-ready"}` once it listens. Each client
connection sends one JSON line {"module" or "code", "args", "env", "cwd"}; the connection then carries, one per
line, `pid <n>`, `out <base64>` / `err <base64>` for what the process writes on stdout / stderr, and `exit <code>`
(negative: killed by that signal). Closing the connection kills the process. No inlaid_worker module is imported
before the fork, so everything that module reads from the environment at import time sees the request's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import signal
import socket
import sys

PRELOAD = ("torch", "transformers", "transformers.models.auto.tokenization_auto", "safetensors.torch")


def _run_child(req: dict, out_w: int, err_w: int) -> None:
    """In the forked process: becomes `python -m module args` with stdout/stderr on the pipes; never returns."""
    import runpy

    code = 0
    try:
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, 1024)  # the listener, the client connection and the pipes' other ends
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # unbuffered, as PYTHONUNBUFFERED=1 makes a spawned worker's
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        if "code" in req:  # as `python -c code args`
            sys.path[0] = ""
            sys.argv = ["-c", *req["args"]]
            exec(compile(req["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:  # as `python -m module args` from that directory
            sys.path[0] = req["cwd"]
            sys.argv = [req["module"], *req["args"]]
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and exit like the interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        atexit._run_exitfuncs()  # as the interpreter's exit would (multiprocessing's children, logging, temp dirs)
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _handle(conn: socket.socket) -> None:
    """In a per-connection process: starts the child and relays its output and exit status; never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            os._exit(0)
        buf += chunk
    req = json.loads(buf)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _run_child(req, out_w, err_w)
    os.close(out_w)
    os.close(err_w)

    def send(line: str) -> None:
        try:
            conn.sendall(f"{line}\n".encode())
        except OSError:  # the client went away
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)

    send(f"pid {pid}")
    names = {out_r: "out", err_r: "err"}
    open_fds = [out_r, err_r]
    status = None
    while status is None:
        ready, _, _ = select.select([*open_fds, conn], [], [], 0.05)
        if conn in ready and not conn.recv(1):  # the client went away: the process goes too
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:  # exited: what it wrote before is in the pipes; what is left open by others is not waited for
            status = st
            ready = select.select(open_fds, [], [], 0)[0]
        for fd in ready:
            if fd is conn:
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                open_fds.remove(fd)
                continue
            send(f"{names[fd]} {base64.b64encode(data).decode()}")
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    try:
        conn.sendall(f"exit {code}\n".encode())
    finally:
        os._exit(0)


def main() -> None:
    path = sys.argv[1]
    for name in PRELOAD:
        __import__(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print(json.dumps({"event": "zygote-ready", "pid": os.getpid()}), flush=True)
    parent = os.getppid()
    while True:
        ready, _, _ = select.select([listener], [], [], 1.0)
        if os.getppid() != parent:  # the test runner is gone
            return
        if not ready:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _handle(conn)
        conn.close()


if __name__ == "__main__":
    main()
