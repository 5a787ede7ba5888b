"""The stall watchdog ends a process whose loop stopped making progress, and leaves a live one alone.

The watched processes are real subprocesses (``os._exit`` cannot be observed in-process); the
"stuck client call" is a thread blocked on an event that is never set, as a librdkafka call
blocked past its timeout looks from Python.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

from broker.ports import Message, Source
from broker.watchdog import STUCK_EXIT_CODE
from broker.worker import Worker


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_a_loop_without_progress_exits_75_with_its_stacks():
    res = _run("""
        import threading
        from broker.watchdog import StallWatchdog
        StallWatchdog(lambda: 10_000.0, limit_s=0.5, what="the test loop").start()
        def blocked_client_call():
            threading.Event().wait()
        blocked_client_call()
    """)
    assert res.returncode == STUCK_EXIT_CODE, res.stderr[-2000:]
    assert "the test loop made no progress" in res.stderr
    assert "blocked_client_call" in res.stderr, "the stacks say where it waited"


def test_a_loop_that_progresses_is_left_alone():
    res = _run("""
        import time
        from broker.watchdog import StallWatchdog
        dog = StallWatchdog(lambda: 0.0, limit_s=0.5).start()
        time.sleep(2.0)
        dog.stop()
        print("finished")
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "finished"


def test_a_call_past_its_deadline_ends_the_process_and_a_quick_one_returns():
    res = _run("""
        import threading
        from broker.watchdog import run_within
        assert run_within(lambda: 41 + 1, seconds=30, what="quick") == 42
        try:
            run_within(lambda: 1 / 0, seconds=30, what="raising")
        except ZeroDivisionError:
            print("raised through")
        run_within(lambda: threading.Event().wait(), seconds=0.5, what="send_offsets_to_transaction")
        print("not reached")
    """)
    assert res.returncode == STUCK_EXIT_CODE, res.stderr[-2000:]
    assert "raised through" in res.stdout and "not reached" not in res.stdout
    assert "send_offsets_to_transaction did not return" in res.stderr


class _BlockingSource(Source):
    """Returns one empty poll, then blocks in the next until released (a hung client call)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.polls = 0

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        self.polls += 1
        if self.polls >= 2:
            self.release.wait()
        return []

    def commit(self, messages: list[Message]) -> None:
        pass

    @property
    def exhausted(self) -> bool:
        return self.release.is_set()


class _NoPipeline:
    metrics = SimpleNamespace(stage_totals=dict, set=lambda *a, **k: None, inc=lambda *a, **k: None)
    faults = None

    def prepare(self) -> None:
        pass


def test_the_worker_reports_time_without_progress_while_a_poll_hangs(monkeypatch):
    source = _BlockingSource()
    worker = Worker(_NoPipeline(), source, poll_timeout_s=0.01)  # type: ignore[arg-type]
    monkeypatch.setattr(worker, "_export_lag", lambda force=False: None)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while source.polls < 2:
        time.sleep(0.01)
    first = worker.seconds_without_progress()
    time.sleep(0.3)
    assert worker.seconds_without_progress() > first, "a hung poll is time without progress"
    source.release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.seconds_without_progress() < 0.3 + first, "a returned poll is progress"
