"""``albireo scan-server``: start queued scans, collect results, refine, finish; keep the manifest.

The API only stores a scan record (status ``queued``); this process does the rest, so the API, the
server and the workers can run anywhere that reaches the store and the queue:

1. **start** — a queued scan gets its first step (the whole sky at the first nside), written to the
   record *before* its tasks are published (a crash in between is healed by step 4);
2. **collect** — results (one partition, keyed by scan: one server owns a scan at a time) are
   deduplicated by (scan, nside, pixel) — a pixel already stored, outside the step's pixel set, or
   of an older step is ignored and counted — stored (``Store.put_scan_pixels``), and only then
   committed: a server killed mid-batch reads the batch again and ignores what it had stored;
3. **refine / finish** — when a step has every pixel, the next step's pixels are chosen
   (:mod:`.refine`) and published; after the last one the scan is ``done``. Each completed step
   refreshes the record's ``summary`` (best fit, 50 %/90 % areas and contour lines, from skyreader);
4. **resend** — a running step without progress for ``resend_after_s`` has its missing pixels
   published again (tasks lost with a dead server, or stuck on a slow worker, as SkyDriver does).

A scan aborted through the API (``DELETE``) is never written back as running: the record is read
again just before each write. Its queued tasks are skipped by the workers, its results ignored here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.multimessenger.scans.model import ABORTED, DONE, FAILED, FINISHED, QUEUED, RUNNING, ScanEvent
from broker.multimessenger.scans.refine import full_sky, refine
from broker.multimessenger.scans.tasks import MessageError, Result, decode_result, encode_task
from broker.ports import Sink, Source, Store

log = logging.getLogger("albireo.scans.server")


@dataclass(frozen=True)
class ServerSettings:
    #: priority lane → task topic.
    task_topics: dict[str, str]
    result_topic: str
    pixels_per_task: int = 16
    refine_best: int = 12
    max_step_pixels: int = 20_000
    resend_after_s: float = 300.0
    batch_size: int = 500


def topics(prefix: str) -> tuple[dict[str, str], str]:
    """The task topic of each lane and the result topic, from ``scans.topic_prefix``."""
    return {"realtime": f"{prefix}tasks.realtime", "backfill": f"{prefix}tasks.backfill"}, f"{prefix}results"


class ScanServer:
    def __init__(self, store: Store, results: Source, sink: Sink, settings: ServerSettings,
                 clock: Callable[[], float] = time.time):
        self.store, self.results, self.sink, self.settings, self.clock = store, results, sink, settings, clock
        #: scan → nside → pixels stored (loaded from the store the first time a scan is met: restart-safe).
        self._done: dict[str, dict[int, set[int]]] = {}

    # ---- 1. start --------------------------------------------------------------------------------
    def start_queued(self) -> int:
        started = 0
        for rec in reversed(self.store.scans(status=QUEUED)):  # oldest first
            now = self.clock()
            nside = int(rec["nsides"][0])
            rec.update(status=RUNNING, started=now, updated=now, step=0,
                       steps=[_step(nside, 12 * nside * nside, None, now)])
            if self._write(rec):
                self._publish(rec, nside, full_sky(nside))
                started += 1
        return started

    # ---- 2./3. collect, refine, finish -----------------------------------------------------------
    def step(self, timeout_s: float = 0.5) -> int:
        """One poll of results: store the new pixels, advance finished steps, then commit."""
        messages = self.results.poll_batch(self.settings.batch_size, timeout_s)
        by_scan: dict[str, list[Result]] = {}
        for m in messages:
            try:
                r = decode_result(m.value)
            except MessageError as exc:
                log.warning("not a scan result (%s): %s", m.origin, exc)
                continue
            by_scan.setdefault(r.scan_id, []).append(r)
        for sid, results in by_scan.items():
            self._collect(sid, results)
        self.sink.flush()
        self.results.commit(messages)
        return len(messages)

    def _done_for(self, sid: str) -> dict[int, set[int]]:
        if sid not in self._done:
            self._done[sid] = {n: set(rows[:, 0].astype(int).tolist())
                               for n, rows in self.store.scan_pixels(sid).items()}
        return self._done[sid]

    def _collect(self, sid: str, results: list[Result]) -> None:
        rec = self.store.scan(sid)
        if rec is None or rec["status"] != RUNNING:
            if rec is not None and rec["status"] in FINISHED:
                self._done.pop(sid, None)
            return
        step = rec["steps"][rec["step"]]
        nside = int(step["nside"])
        done = self._done_for(sid).setdefault(nside, set())
        expected = None if step["pixels"] is None else np.asarray(step["pixels"], dtype=np.int64)
        fresh: dict[int, np.ndarray] = {}
        ignored = 0
        for r in results:
            if r.error:
                rec.update(status=FAILED, reason=f"the reconstruction failed on a worker ({r.worker}): {r.error}",
                           finished=self.clock())
                self._write(rec)
                return
            if r.nside != nside:
                ignored += len(r.rows)
                continue
            took = 0
            for row in r.rows:
                p = int(row[0])
                if p in done or p in fresh or (expected is not None and not _member(expected, p)):
                    ignored += 1
                    continue
                fresh[p] = row
                took += 1
            if took:
                tally = rec.setdefault("workers", {})
                tally[r.worker] = int(tally.get(r.worker, 0)) + took
        if fresh:
            self.store.put_scan_pixels(sid, nside, np.array(list(fresh.values())))
            done.update(fresh)
        now = self.clock()
        step["done"] = len(done)
        rec["updated"] = now
        rec["duplicates_ignored"] = int(rec.get("duplicates_ignored", 0)) + ignored
        next_pixels = None
        if step["done"] >= step["expected"]:
            step["finished"] = now
            pixels = self.store.scan_pixels(sid)
            rec["summary"] = _summary(rec, pixels)
            if rec["step"] + 1 < len(rec["nsides"]):
                nxt = int(rec["nsides"][rec["step"] + 1])
                rows = pixels[nside]
                next_pixels = refine(nside, rows[:, 0].astype(np.int64), rows[:, 1], nxt,
                                     best=self.settings.refine_best, max_pixels=self.settings.max_step_pixels)
                rec["steps"].append(_step(nxt, len(next_pixels), next_pixels.tolist(), now))
                rec["step"] += 1
            else:
                rec.update(status=DONE, finished=now)
                self._done.pop(sid, None)
        if self._write(rec) and next_pixels is not None:
            self._publish(rec, int(rec["nsides"][rec["step"]]), next_pixels)

    # ---- 4. resend ---------------------------------------------------------------------------
    def resend_stalled(self) -> int:
        """Publish again the missing pixels of running steps without progress for ``resend_after_s``."""
        sent = 0
        now = self.clock()
        for rec in self.store.scans(status=RUNNING):
            if now - float(rec.get("updated") or 0) < self.settings.resend_after_s:
                continue
            step = rec["steps"][rec["step"]]
            nside = int(step["nside"])
            want = full_sky(nside) if step["pixels"] is None else np.asarray(step["pixels"], dtype=np.int64)
            done = self._done_for(rec["scan_id"]).get(nside, set())
            missing = want[~np.isin(want, np.fromiter(done, dtype=np.int64, count=len(done)))]
            rec["updated"] = now
            rec["resent"] = int(rec.get("resent", 0)) + len(missing)
            if self._write(rec) and len(missing):
                log.info("scan %s: %d pixels of nside %d sent again", rec["scan_id"], len(missing), nside)
                self._publish(rec, nside, missing)
                sent += len(missing)
        self.sink.flush()
        return sent

    # ---- plumbing ----------------------------------------------------------------------------
    def _write(self, rec: dict[str, Any]) -> bool:
        """Write the record unless the API aborted the scan meanwhile (then leave the abort alone)."""
        cur = self.store.scan(rec["scan_id"])
        if cur is not None and cur["status"] == ABORTED:
            self._done.pop(rec["scan_id"], None)
            return False
        self.store.put_scan(rec)
        return True

    def _publish(self, rec: dict[str, Any], nside: int, pixels: np.ndarray) -> None:
        topic = self.settings.task_topics[rec.get("priority", "realtime")]
        event = ScanEvent.from_dict(rec["event"])
        n = self.settings.pixels_per_task
        for i in range(0, len(pixels), n):
            self.sink.publish(topic, f"{rec['scan_id']}:{nside}:{i // n}".encode(),
                              encode_task(rec["scan_id"], nside, pixels[i:i + n], rec["reconstruction"],
                                          rec["params"], event))
        self.sink.flush()

    def run(self, stop: Callable[[], bool] = lambda: False, idle_timeout_s: float | None = None,
            start_every_s: float = 1.0) -> None:
        """Start, collect and resend until ``stop()`` (or ``idle_timeout_s`` with no scan running)."""
        last_start, idle_since = 0.0, time.monotonic()
        while not stop():
            if time.monotonic() - last_start >= start_every_s:
                self.start_queued()
                self.resend_stalled()
                last_start = time.monotonic()
            if self.step():
                idle_since = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                if not self.store.scans(status=RUNNING) and not self.store.scans(status=QUEUED):
                    break


def _member(sorted_pixels: np.ndarray, p: int) -> bool:
    i = int(np.searchsorted(sorted_pixels, p))
    return i < len(sorted_pixels) and int(sorted_pixels[i]) == p


def _step(nside: int, expected: int, pixels: list[int] | None, now: float) -> dict[str, Any]:
    return {"nside": nside, "expected": int(expected), "pixels": pixels, "done": 0, "started": now, "finished": None}


def _summary(rec: dict[str, Any], pixels: dict[int, np.ndarray]) -> dict[str, Any] | None:
    """Best fit and contours of what is stored (None, with the reason logged, if skyreader cannot draw them)."""
    from broker.multimessenger.scans.result import contours, skyscan_result

    try:
        return contours(skyscan_result(ScanEvent.from_dict(rec["event"]), pixels))
    except Exception as exc:  # contours of a partial or degenerate map: the scan goes on without them
        log.warning("scan %s: no contours yet (%s: %s)", rec["scan_id"], type(exc).__name__, exc)
        return None


def manifest(rec: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Progress as SkyDriver's manifest gives it: pixels done per nside, rate, ETA, complete flag."""
    now = time.time() if now is None else now
    steps = [{k: s[k] for k in ("nside", "expected", "done", "started", "finished")} for s in rec.get("steps", [])]
    done = sum(s["done"] for s in steps)
    started = rec.get("started")
    end = rec.get("finished") or now
    elapsed = (end - started) if started else 0.0
    rate = done / elapsed if elapsed > 0 else None
    remaining = sum(s["expected"] - s["done"] for s in steps)
    running = rec["status"] == RUNNING
    return {"scan_id": rec["scan_id"], "status": rec["status"], "complete": rec["status"] == DONE,
            "priority": rec.get("priority"), "reconstruction": rec.get("reconstruction"),
            "nside_progression": rec.get("nsides"),
            "current_nside": steps[-1]["nside"] if steps else None,
            "steps": steps, "pixels_done": done, "pixels_remaining_this_step": remaining,
            "rate_pixels_per_s": rate, "elapsed_s": elapsed,
            # to the end of the running step: a refinement's size is known only once the step before it ends
            "eta_s": (remaining / rate) if running and rate else None,
            "duplicates_ignored": int(rec.get("duplicates_ignored", 0)), "resent": int(rec.get("resent", 0)),
            #: pixels each worker contributed (first result of a pixel wins; duplicates are not counted).
            "workers": dict(rec.get("workers") or {}),
            "created": rec.get("created"), "started": started, "finished": rec.get("finished"),
            "reason": rec.get("reason", "")}
