"""``albireo scan-worker``: evaluate pixel tasks, publish their results, commit only after that.

One worker is one member of the task consumer groups (Kafka), or one consumer of the SQLite queue;
N of them share the work, on one machine or many. Each poll serves the *realtime* lane first and
takes from the *backfill* lane only when realtime has nothing, a few tasks at a time, so a realtime
scan overtakes a backfill already running.

A task's offsets are committed after its results were acknowledged by the sink (at least once): a
worker killed mid-task loses nothing, its tasks are delivered again (Kafka: to the partitions' new
owner after the session timeout; SQLite queue: when the lease runs out) and the scan server ignores
the duplicates. Tasks of scans that were aborted (or are unknown, or finished) are skipped, read
from the store at most every ``status_ttl_s``. A reconstruction that raises yields a result with
``error``, which fails the scan with that reason; a message that is no task, or whose parameters
lie outside the reconstruction's declared bounds, is logged and skipped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.multimessenger.scans.model import RUNNING, check_params
from broker.multimessenger.scans.tasks import MessageError, decode_task, encode_result
from broker.ports import DeliveryError, Message, Sink, Source, Store

log = logging.getLogger("albireo.scans.worker")


@dataclass
class WorkerStats:
    tasks: int = 0
    pixels: int = 0
    skipped: int = 0
    rejected: int = 0
    errors: int = 0
    compute_s: float = 0.0
    #: lane of each task evaluated, in order (``realtime``/``backfill``): what the priority test reads.
    lanes: list[str] = field(default_factory=list)


class ScanWorker:
    """Polls the realtime lane, then the backfill lane; evaluates; publishes; commits."""

    def __init__(self, realtime: Source, backfill: Source, sink: Sink, result_topic: str, store: Store | None,
                 registry: dict[str, Any], *, batch_size: int = 8, poll_timeout_s: float = 0.5,
                 status_ttl_s: float = 2.0):
        self.lanes = (("realtime", realtime), ("backfill", backfill))
        self.sink, self.result_topic, self.store, self.registry = sink, result_topic, store, registry
        self.batch_size, self.poll_timeout_s, self.status_ttl_s = batch_size, poll_timeout_s, status_ttl_s
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.stats = WorkerStats()
        self._status: dict[str, tuple[float, str | None]] = {}

    def _scan_status(self, scan_id: str) -> str | None:
        if self.store is None:
            return RUNNING
        now = time.monotonic()
        hit = self._status.get(scan_id)
        if hit is None or now - hit[0] > self.status_ttl_s:
            rec = self.store.scan(scan_id)
            hit = (now, rec.get("status") if rec else None)
            self._status[scan_id] = hit
        return hit[1]

    def step(self) -> int:
        """One poll (realtime first) and its tasks; the number of task messages handled."""
        # short polls, realtime first each time: a long wait on the backfill lane would leave realtime
        # tasks that arrive meanwhile waiting for it (both lanes are polled about 25 times a second when idle)
        deadline = time.monotonic() + self.poll_timeout_s
        while True:
            lane, source = self.lanes[0]
            messages = source.poll_batch(self.batch_size, 0.02)
            if not messages:
                lane, source = self.lanes[1]
                messages = source.poll_batch(max(1, self.batch_size // 4), 0.02)
            if messages:
                break
            if time.monotonic() >= deadline:
                return 0
        for m in messages:
            self._handle(m, lane)
        try:
            self.sink.flush()
        except DeliveryError as exc:  # not acknowledged: not committed; given back to be evaluated again
            log.warning("results not acknowledged (%s); the tasks will be evaluated again", exc)
            source.rewind(messages)
            time.sleep(1.0)
            return 0
        source.commit(messages)
        return len(messages)

    def _handle(self, m: Message, lane: str) -> None:
        try:
            task = decode_task(m.value)
        except MessageError as exc:
            self.stats.rejected += 1
            log.warning("not a scan task (%s): %s", m.origin, exc)
            return
        if self._scan_status(task.scan_id) != RUNNING:
            self.stats.skipped += 1
            return
        reco = self.registry.get(task.reconstruction)
        if reco is not None:
            reasons: list[str] = []
            check_params(reco, task.params, reasons)
            if reasons:  # the task topic is a trust boundary: no unbounded work_ms from a forged task
                self.stats.rejected += 1
                log.warning("scan task %s refused: %s", m.origin, "; ".join(reasons))
                return
        t0 = time.perf_counter()
        error = ""
        try:
            if reco is None:
                raise LookupError(f"reconstruction {task.reconstruction!r} is not registered on this worker")
            values = np.asarray(reco.evaluate(task.event, task.nside, task.pixels, task.params), dtype=float)
            if values.ndim == 1:
                values = np.column_stack([values, np.zeros(len(values)), np.zeros(len(values))])
            if values.shape != (len(task.pixels), 3):
                raise ValueError(f"{task.reconstruction} returned shape {values.shape} for {len(task.pixels)} pixels")
        except Exception as exc:  # a reconstruction's bug fails its scan, never the worker
            error = f"{type(exc).__name__}: {exc}"
            values = np.full((len(task.pixels), 3), np.nan)
            self.stats.errors += 1
            log.error("scan %s nside %d: %s", task.scan_id, task.nside, error)
        dt = time.perf_counter() - t0
        self.stats.tasks += 1
        self.stats.pixels += len(task.pixels)
        self.stats.compute_s += dt
        self.stats.lanes.append(lane)
        self.sink.publish(self.result_topic, task.scan_id.encode(),
                          encode_result(task.scan_id, task.nside, task.pixels, values, self.name, dt, error))

    def run(self, stop: Callable[[], bool] = lambda: False, idle_timeout_s: float | None = None) -> WorkerStats:
        """Until ``stop()`` or ``idle_timeout_s`` without a task."""
        last = time.monotonic()
        while not stop():
            if self.step():
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                break
        return self.stats
