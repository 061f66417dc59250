"""The worker's stop signal reaches its main thread when the kernel delivers it to another thread (stop_signal.py).

Before, the main thread waited in threading.Event().wait() for a handler that only runs when the main thread executes
bytecode: a SIGTERM that landed on one of the worker's other threads (gRPC, engine loop, torch) was never acted on, and
the worker went on serving without refusing new work or saying it was draining (CI's worker-draining flake; here a
real worker process missed about one SIGTERM in 30)."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time

import pytest
from inlaid_worker.server.stop_signal import StopSignals


def _signal_other_thread(signum: int, after_s: float) -> threading.Event:
    """A thread blocked in a wait, sent `signum` (pthread_kill: it alone gets it) after `after_s`; set the event to end it."""
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(30,), daemon=True)
    other.start()
    threading.Timer(after_s, signal.pthread_kill, (other.ident, signum)).start()
    return release


def test_a_signal_delivered_to_another_thread_wakes_the_main_thread_at_once() -> None:
    stop = StopSignals((signal.SIGUSR1,))
    release = _signal_other_thread(signal.SIGUSR1, 0.2)
    try:
        t0 = time.monotonic()
        assert stop.wait(backstop_s=30) == signal.SIGUSR1  # woken by the wakeup fd, not the 30 s backstop
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
        stop.close()


def test_another_signal_on_the_wakeup_fd_does_not_end_the_wait() -> None:
    """The wakeup fd carries every handled signal's number (here SIGUSR2's, whose handler another component set): the
    wait goes on until one of its own arrives."""
    others: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: others.append(signum))
    stop = StopSignals((signal.SIGUSR1,))
    release_other = _signal_other_thread(signal.SIGUSR2, 0.1)
    release_own = _signal_other_thread(signal.SIGUSR1, 0.6)
    try:
        t0 = time.monotonic()
        assert stop.wait(backstop_s=30) == signal.SIGUSR1
        assert time.monotonic() - t0 >= 0.5  # SIGUSR2 at 0.1 s did not end it
    finally:
        release_other.set()
        release_own.set()
        stop.close()
        signal.signal(signal.SIGUSR2, previous)


def test_the_wait_works_with_its_pipe_above_fd_1024() -> None:
    """A worker that opened many files (CUDA, gRPC, the model's shards) before its StopSignals gets a pipe above
    FD_SETSIZE: select.select raised ValueError ("filedescriptor out of range in select()") there, and the worker
    never saw its SIGTERM."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler: list[int] = []
    try:
        while not filler or filler[-1] < 1030:  # the lowest free fds taken, as by a loaded worker
            filler.append(os.open(os.devnull, os.O_RDONLY))
        stop = StopSignals((signal.SIGUSR1,))
        try:
            probe_r, probe_w = os.pipe()  # the next fds: StopSignals' pipe lies above 1024 too
            os.close(probe_r)
            os.close(probe_w)
            assert probe_r > 1024
            release = _signal_other_thread(signal.SIGUSR1, 0.2)
            try:
                assert stop.wait(backstop_s=30) == signal.SIGUSR1
            finally:
                release.set()
        finally:
            stop.close()
    finally:
        for fd in filler:
            os.close(fd)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_signal_before_the_wait_is_not_lost() -> None:
    stop = StopSignals((signal.SIGUSR1,))
    try:
        signal.raise_signal(signal.SIGUSR1)
        assert stop.wait(backstop_s=30) == signal.SIGUSR1
    finally:
        stop.close()
