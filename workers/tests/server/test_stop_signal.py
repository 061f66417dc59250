"""The worker's stop signal reaches its main thread when the kernel delivers it to another thread (stop_signal.py).

Before, the main thread waited in threading.Event().wait() for a handler that only runs when the main thread executes
bytecode: a SIGTERM that landed on one of the worker's other threads (gRPC, engine loop, torch) was never acted on, and
the worker went on serving without refusing new work or saying it was draining (CI's worker-draining flake; here a
real worker process missed about one SIGTERM in 30)."""

from __future__ import annotations

import signal
import threading
import time

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


def test_the_former_wait_misses_such_a_signal() -> None:
    """What the worker did before: the handler sets an Event the main thread waits on. The signal lands on another
    thread, and the wait sees nothing until its timeout (without one: never)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: stop.set())
    release = _signal_other_thread(signal.SIGUSR1, 0.2)
    try:
        assert not stop.wait(1.5)  # the handler had not run: the main thread never left the lock's wait
    finally:
        release.set()
        time.sleep(0.05)  # the pending handler runs here
        signal.signal(signal.SIGUSR1, previous)


def test_a_signal_before_the_wait_is_not_lost() -> None:
    stop = StopSignals((signal.SIGUSR1,))
    try:
        signal.raise_signal(signal.SIGUSR1)
        assert stop.wait(backstop_s=30) == signal.SIGUSR1
    finally:
        stop.close()
