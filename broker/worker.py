"""The worker loop: poll a batch, run the pipeline, acknowledge, commit; never drop a batch.

One worker is one member of the Kafka consumer group (or one embedded run over
files). Scaling out is starting more workers with the same ``group_id``: Kafka
spreads the input partitions between them.

Failures of the *infrastructure* (Kafka not acknowledging, the store or index
unreachable) are retried with exponential back-off on the same batch, whose
offsets stay uncommitted: nothing is lost, and the idempotent writes make the
retry harmless. Failures of the *data* never reach this loop: the pipeline turns
them into dead letters.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from broker.pipeline import BatchResult
from broker.ports import (
    BatchProcessor,
    DecodingProcessor,
    DeliveryError,
    Message,
    Rebalanced,
    Source,
    TransactionalSink,
    TransactionalSource,
)

log = logging.getLogger("albireo.worker")


@dataclass
class RunSummary:
    result: BatchResult = field(default_factory=BatchResult)
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def alerts_per_s(self) -> float:
        return self.result.packets / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        """The run in lines that add up: messages = with alerts + empty + rejected; packets = new +
        duplicates; the alerts, loci and dead letters stored are what the store gained."""
        r = self.result
        decoded = r.messages - r.empty - r.rejected_total
        lines = [
            f"messages read      {r.messages}  ({decoded} with alerts, {r.empty} empty, {r.rejected_total} rejected)",
            f"packets decoded    {r.packets}  ({r.packets - r.duplicates} new, {r.duplicates} duplicates skipped)",
            f"alerts stored      {r.alerts_new}  (triggers and their history, each alert once)",
            f"rejected           {r.rejected_total}  ({r.dead_letters_new} new dead letters stored)"
            + ("".join(f"\n  - {reason}: {n}" for reason, n in sorted(r.rejected.items())) if r.rejected else ""),
            f"loci created       {r.loci_created}",
            f"loci updated       {r.loci_updated}",
            f"loci cross-matched {r.crossmatched}",
            f"filter errors      {r.filter_errors}",
            "tags per stream    " + (", ".join(f"{t}={n}" for t, n in sorted(r.tags.items())) or "(none)")
            + (f"\n  (+{r.reemitted} outputs of stored packets re-emitted: their transaction had not committed)"
               if r.reemitted else ""),
            f"throughput         {self.alerts_per_s:,.0f} packets/s over {self.seconds:.2f}s "
            f"({self.batches} batches)",
        ]
        if self.stage_seconds:
            total = sum(self.stage_seconds.values()) or 1.0
            lines.append(
                "time per stage     "
                + ", ".join(f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in self.stage_seconds.items())
            )
        return "\n".join(lines)


class Worker:
    def __init__(self, pipeline: BatchProcessor, source: Source, batch_size: int = 500, poll_timeout_s: float = 1.0,
                 transactional_sink: TransactionalSink | None = None, decode_ahead: bool = False):
        if transactional_sink is not None and not isinstance(source, TransactionalSource):
            raise TypeError(f"a transactional sink needs a transactional source, not {type(source).__name__}")
        self.pipeline = pipeline
        self.source = source
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.transactional_sink = transactional_sink
        #: decode the next batch in a thread while this one runs (only a pipeline that can: see
        #: :class:`~broker.ports.DecodingProcessor`); off by default, measured not to pay here.
        self.decode_ahead = decode_ahead and isinstance(pipeline, DecodingProcessor)
        #: the next batch, polled while this one was processed, and its decoding in the thread.
        self._ahead: tuple[list[Message], Future] | None = None
        self._stop = False
        self._last_poll = time.monotonic()
        self._last_progress = time.monotonic()
        self._retrying_since: float | None = None
        self._last_lag = 0.0

    #: a worker that has not polled for this long, or has retried one batch for this long, is unhealthy.
    STUCK_S = 60.0
    #: how often the consumer lag gauge is refreshed (one request per assigned partition).
    LAG_EVERY_S = 5.0

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers: healthy while polling and not stuck retrying one batch."""
        now = time.monotonic()
        since_poll = now - self._last_poll
        retrying = now - self._retrying_since if self._retrying_since is not None else 0.0
        healthy = since_poll < max(self.STUCK_S, 10 * self.poll_timeout_s) and retrying < self.STUCK_S
        return {"healthy": healthy, "seconds_since_poll": round(since_poll, 1),
                "retrying_for_s": round(retrying, 1), "stopping": self._stop}

    def seconds_without_progress(self) -> float:
        """Since a poll last returned or a batch attempt last started or committed (the stall watchdog's input)."""
        return time.monotonic() - self._last_progress

    def progressed(self) -> None:
        """Mark progress: the loop is not stuck (also called around shutdown, whose client calls can block)."""
        self._last_progress = time.monotonic()

    def _export_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_lag < self.LAG_EVERY_S:
            return
        self._last_lag = now
        try:
            lag = self.source.lag()
        except Exception as exc:  # lag is for operators; never let it stop the stream
            log.debug("could not read the consumer lag: %s", exc)
            return
        for (topic, partition), n in lag.items():
            self.pipeline.metrics.set("consumer_lag", n, topic=topic, partition=partition)

    def stop(self, *_: Any) -> None:
        """Finish the current batch, commit it and return (SIGTERM/SIGINT handler)."""
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, max_messages: int | None = None, idle_timeout_s: float | None = None,
            max_backoff_s: float = 30.0, on_batch: Callable[[BatchResult], None] | None = None) -> RunSummary:
        """Process until the source is exhausted, ``max_messages`` were read, idle too long, or stopped.

        ``on_batch`` is called with each committed batch's result (progress bars, status).
        """
        summary = RunSummary()
        self.pipeline.prepare()
        t_start = time.perf_counter()
        last_data = time.monotonic()
        pool = ThreadPoolExecutor(1, thread_name_prefix="decode-ahead") if self.decode_ahead else None
        try:
            while not self._stop:
                want = self._want(summary, max_messages)
                if want <= 0:
                    break
                decoded: Future | None = None
                if self._ahead is not None:
                    batch, decoded = self._ahead
                    self._ahead = None
                else:
                    batch = self.source.poll_batch(want, self.poll_timeout_s)
                    self._last_poll = self._last_progress = time.monotonic()
                    self._export_lag()
                if not self.source.ready:
                    last_data = time.monotonic()
                if not batch:
                    if self.source.exhausted:
                        break
                    if idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s:
                        break
                    continue
                last_data = time.monotonic()
                if pool is not None and not self._stop:
                    self._poll_ahead(pool, self._want(summary, max_messages, len(batch)))
                res = self._process_with_retry(batch, summary, max_backoff_s, decoded)
                if self.pipeline.faults is not None:
                    self.pipeline.faults.hit("after_commit")  # outside the retry: a committed batch is never redone
                summary.result.add(res)
                summary.batches += 1
                if on_batch is not None:
                    on_batch(res)
        finally:
            self._drop_ahead()  # stopped with a batch read ahead: it was not processed, so it is read again
            if pool is not None:
                pool.shutdown(wait=True)
        summary.seconds = time.perf_counter() - t_start
        summary.stage_seconds = self.pipeline.metrics.stage_totals()
        return summary

    def _want(self, summary: RunSummary, max_messages: int | None, reserved: int = 0) -> int:
        """How many messages the next poll may take (``max_messages`` counts ``reserved`` ones as read)."""
        if max_messages is None:
            return self.batch_size
        return min(self.batch_size, max_messages - summary.result.messages - reserved)

    def _poll_ahead(self, pool: ThreadPoolExecutor, want: int) -> None:
        """Take what the source already holds for the next batch (no waiting) and decode it in the thread."""
        if want <= 0:
            return
        nxt = self.source.poll_batch(want, 0.0)
        self._last_poll = self._last_progress = time.monotonic()
        if nxt:
            self._ahead = (nxt, pool.submit(self.pipeline.decode, nxt))  # type: ignore[attr-defined]

    def _drop_ahead(self) -> None:
        """Forget the batch read ahead and have the source deliver it again (where it still owns it)."""
        if self._ahead is None:
            return
        batch, fut = self._ahead
        self._ahead = None
        fut.cancel()
        self.source.rewind(batch)

    def _process_with_retry(self, batch: list[Message], summary: RunSummary, max_backoff_s: float,
                            decoded: Future | None = None) -> BatchResult:
        """Process and commit ``batch``; infrastructure errors are retried forever with back-off.

        Any other exception is a bug met by some message: after one retry the batch
        is split in halves, down to the single message that fails, which is
        dead-lettered with its traceback so the stream keeps flowing. ``decoded``: the batch's
        decoding, run ahead in a thread; used by the first attempt only (a retry decodes again).
        """
        delay = 0.5
        attempts = 0
        while True:
            self.progressed()
            try:
                if decoded is not None:
                    ahead, decoded = decoded.result(), None
                    res = self.pipeline.process(batch, ahead)  # type: ignore[call-arg]
                else:
                    res = self.pipeline.process(batch)
                self._commit(batch)
                self.progressed()
                self._retrying_since = None
                return res
            except Rebalanced as exc:
                # The group moved on: the batch's partitions may be another worker's now. Drop it (nothing
                # was committed; the store writes are idempotent and the outputs recorded) and read on.
                self._abort()
                self._drop_ahead()  # read after this batch, from partitions that may have moved too
                self.source.rewind(batch)
                self.pipeline.metrics.inc("batches_dropped_on_rebalance")
                log.warning("batch of %d dropped after a rebalance: %s", len(batch), exc)
                return BatchResult()
            except Exception as exc:
                if self._retrying_since is None:
                    self._retrying_since = time.monotonic()
                self._abort()
                summary.retries += 1
                self.pipeline.metrics.inc("batch_retries")
                attempts += 1
                transient = is_transient(exc)
                log.error("batch of %d failed (%s: %s)%s", len(batch), type(exc).__name__, exc,
                          f"; retrying in {delay:.1f}s" if transient else "",
                          extra={"batch": f"{batch[0].origin}..{batch[-1].origin}"})
                if self._stop:
                    raise
                if transient:
                    time.sleep(delay)
                    delay = min(delay * 2, max_backoff_s)
                    continue
                if attempts < 2:
                    continue
                if len(batch) == 1:
                    res = self.pipeline.dead_letter(batch, "internal_error", f"{type(exc).__name__}: {exc}\n"
                                                    + traceback.format_exc())
                    self._commit(batch)
                    return res
                half = len(batch) // 2
                res = self._process_with_retry(batch[:half], summary, max_backoff_s)
                res.add(self._process_with_retry(batch[half:], summary, max_backoff_s))
                return res

    def _commit(self, batch: list[Message]) -> None:
        if self.pipeline.faults is not None:
            self.pipeline.faults.hit("at_commit")
        if self.transactional_sink is not None:
            assert isinstance(self.source, TransactionalSource)
            self.transactional_sink.commit_transaction(self.source.transaction_offsets(batch))
        else:
            self.source.commit(batch)

    def _abort(self) -> None:
        if self.transactional_sink is not None:
            try:
                self.transactional_sink.abort()
            except Exception as abort_exc:
                log.error("aborting the transaction failed: %s", abort_exc)


_TRANSIENT_MODULES = ("cassandra", "elasticsearch", "elastic_transport", "confluent_kafka", "urllib3", "requests")


def is_transient(exc: BaseException) -> bool:
    """True for errors of the infrastructure (retry the batch), False for bugs met by the data."""
    if isinstance(exc, (DeliveryError, OSError, TimeoutError, ConnectionError, sqlite3.OperationalError)):
        return True
    return any(type(e).__module__.split(".")[0] in _TRANSIENT_MODULES for e in _chain(exc))


def _chain(exc: BaseException):
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
