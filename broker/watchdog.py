"""End a worker process that stopped making progress, so that its supervisor starts a clean one.

Some client calls can block far past their own timeouts (librdkafka's
``send_offsets_to_transaction`` across a broker restart, confluentinc/librdkafka#5456
and #5511; a consumer ``close`` whose group coordinator moved). Such a call cannot be
cancelled from Python, and the worker holding it also holds its partitions: the stream
stops for them while every other signal (the process is alive, its threads exist) says
all is well. Exiting is safe at any point of the worker loop, because nothing is
committed until the batch's transaction or offset commit returns: a new worker re-reads
the uncommitted batch, the idempotent store writes ignore what is already there, and a
transactional restart fences the old transaction.

The exit status is :data:`STUCK_EXIT_CODE`; ``albireo run --workers N`` restarts a worker
that exits with it, and so does a systemd unit with ``Restart=on-failure``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("albireo.watchdog")

#: the exit status of a worker that ended itself because it made no progress (EX_TEMPFAIL).
STUCK_EXIT_CODE = 75


def exit_stuck(what: str) -> None:
    """Log why, print every thread's stack to stderr (where it waited), and end the process now."""
    log.critical("%s; exiting so that a new worker takes over", what)
    try:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    except (OSError, ValueError):  # stderr closed: the log line above still says why
        pass
    logging.shutdown()
    os._exit(STUCK_EXIT_CODE)


class StallWatchdog:
    """A daemon thread that ends the process once ``seconds_idle()`` exceeds ``limit_s``.

    ``seconds_idle`` is the time since the watched loop last showed progress (for the worker:
    a poll returned, a batch attempt started or committed). ``limit_s`` must exceed the
    longest legitimate step, which for a worker is one batch attempt.
    """

    def __init__(self, seconds_idle: Callable[[], float], limit_s: float, what: str = "the worker loop"):
        if limit_s <= 0:
            raise ValueError("limit_s must be positive")
        self.seconds_idle = seconds_idle
        self.limit_s = limit_s
        self.what = what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def start(self) -> StallWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        every = min(5.0, self.limit_s / 10)
        while not self._stop.wait(every):
            idle = self.seconds_idle()
            if idle > self.limit_s:
                exit_stuck(f"{self.what} made no progress for {idle:.0f}s (service.stall_timeout_s={self.limit_s:g})")


def run_within(call: Callable[[], object], seconds: float, what: str) -> object:
    """Run ``call``; if it has not returned after ``seconds``, end the process (it cannot be cancelled).

    Only for calls whose blocking past their own timeout is a known client bug, at a point where
    nothing is committed yet.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, name=f"within-{what}", daemon=True)
    started = time.monotonic()
    t.start()
    t.join(seconds)
    if t.is_alive():
        exit_stuck(f"{what} did not return within {time.monotonic() - started:.0f}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")
