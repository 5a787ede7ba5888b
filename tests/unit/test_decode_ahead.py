"""The worker decodes the next batch in a thread while the current one runs (``kafka.decode_ahead``).

What must hold: the store, the streams and the counts are the same as without it; a batch read
ahead is decoded in the thread and used once; a run bounded by ``max_messages`` reads no more
than that; a batch read ahead when the worker stops, or when its batch is dropped after a
rebalance, is given back to the source (``rewind``) and read again, so nothing is lost.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.emit import decode_locus_message
from broker.filtering.runner import InProcessRunner, load_builtin_filters
from broker.ports import Message, Rebalanced, Source
from broker.worker import Worker


def _pipeline(tmp_path: Path, name: str):
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / f"{name}.sqlite", assoc.order)
    sink = StreamFileSink(tmp_path / f"{name}-out")
    runner = InProcessRunner(load_builtin_filters(["high_snr", "fast_riser"]))
    return store, sink, build_pipeline(cfg, store, sink, filters=runner, associator=assoc)


def _snapshot(store: SQLiteStore) -> dict:
    out = {}
    for batch in store.iter_loci():
        for locus in batch:
            out[locus.locus_id] = (sorted(a.alert_id for a in locus.alerts), sorted(locus.tags),
                                   locus.user_properties)
    return out


def _streams(out_dir: Path) -> dict[str, list]:
    """Each stream's messages whole, but for the time of processing, in order."""
    out: dict[str, list] = {}
    for p in sorted(out_dir.glob("*.avro-stream")):
        if p.name.startswith("albireo.dlq"):
            out[p.name] = sorted(iter_stream_file(p))  # dead letters hold the rejected payload itself
            continue
        recs = [decode_locus_message(raw) for raw in iter_stream_file(p)]
        # as JSON: NaN properties (ZTF's sgmag of no star) compare equal as text, not as floats
        out[p.name] = [json.dumps({k: v for k, v in r.items() if k != "processed_at"}, sort_keys=True, default=str)
                       for r in recs]
    return out


class _Recording:
    """Wraps a pipeline's ``decode`` to record which thread decoded each batch."""

    def __init__(self, pipe):
        self.threads: list[str] = []
        self._decode = pipe.decode
        pipe.decode = self

    def __call__(self, messages):
        self.threads.append(threading.current_thread().name)
        return self._decode(messages)


def test_decoding_ahead_changes_nothing_but_where_decoding_runs(tmp_path, shared_data):
    """Real ZTF packets (with the unreadable one), batches of 7: same loci, tags, streams and counts."""
    inputs = [shared_data / "ztf"]
    results = {}
    for ahead in (False, True):
        store, sink, pipe = _pipeline(tmp_path, f"ahead-{ahead}")
        rec = _Recording(pipe)
        summary = Worker(pipe, FileSource(inputs), batch_size=7, decode_ahead=ahead).run()
        sink.close()
        results[ahead] = (summary, _snapshot(store), _streams(tmp_path / f"ahead-{ahead}-out"), rec.threads)
    (s0, loci0, streams0, threads0), (s1, loci1, streams1, threads1) = results[False], results[True]
    assert loci1 == loci0 and len(loci0) > 10
    assert streams1 == streams0 and sum(map(len, streams0.values())) > 0
    r0, r1 = s0.result, s1.result
    assert (r1.messages, r1.packets, r1.alerts_new, r1.duplicates, r1.rejected, r1.tags, r1.published) == \
        (r0.messages, r0.packets, r0.alerts_new, r0.duplicates, r0.rejected, r0.tags, r0.published)
    assert r1.rejected_total >= 1 and r1.packets + r1.rejected_total + r1.empty == r1.messages
    assert s1.batches == s0.batches
    assert not any(t.startswith("decode-ahead") for t in threads0)
    # every batch but the first is read ahead (the first has nothing to overlap with)
    assert len(threads1) == s1.batches
    assert sorted(threads1) == sorted([threading.main_thread().name] + ["decode-ahead_0"] * (s1.batches - 1))


def test_max_messages_is_not_exceeded_by_reading_ahead(tmp_path, shared_data):
    store, _, pipe = _pipeline(tmp_path, "bounded")
    source = FileSource([shared_data / "ztf"])
    total = source.count()
    summary = Worker(pipe, source, batch_size=4, decode_ahead=True).run(max_messages=10)
    assert summary.result.messages == 10
    assert len(source.poll_batch(10_000, 0)) == total - 10  # nothing was read and left unprocessed


class _ListSource(Source):
    """Real messages from a list, with Kafka's rewind semantics (seek back), to drive the worker's edge cases."""

    def __init__(self, messages: list[Message], fail_commit_at: int | None = None):
        self.messages = messages
        self.pos = 0
        self.rewinds: list[list[int]] = []
        self.commits: list[list[int]] = []
        self.fail_commit_at = fail_commit_at

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        out = self.messages[self.pos : self.pos + max_messages]
        self.pos += len(out)
        return out

    def commit(self, messages: list[Message]) -> None:
        if self.fail_commit_at is not None and len(self.commits) == self.fail_commit_at:
            self.fail_commit_at = None
            raise Rebalanced("the group moved on (injected)")
        self.commits.append([m.offset for m in messages])

    def rewind(self, messages: list[Message]) -> None:
        self.rewinds.append([m.offset for m in messages])
        self.pos = min(self.pos, min(m.offset for m in messages))

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.messages)


def _indexed(shared_data) -> list[Message]:
    raw = FileSource([shared_data / "ztf"]).poll_batch(10_000, 0)
    return [Message(m.value, "ztf", 0, i) for i, m in enumerate(raw)]


def test_a_rebalance_gives_back_the_batch_read_ahead_too(tmp_path, shared_data):
    messages = _indexed(shared_data)
    store, _, pipe = _pipeline(tmp_path, "rebalanced")
    source = _ListSource(messages, fail_commit_at=1)
    summary = Worker(pipe, source, batch_size=5, decode_ahead=True).run()
    # the second batch (offsets 5-9) was dropped with the third (10-14) read ahead: both given back
    assert [5, 6, 7, 8, 9] in source.rewinds and [10, 11, 12, 13, 14] in source.rewinds
    committed = sorted(o for c in source.commits for o in c)
    assert committed == list(range(len(messages)))  # each message committed once, none lost
    assert summary.result.messages == len(messages)
    ref_store, _, ref_pipe = _pipeline(tmp_path, "reference")
    Worker(ref_pipe, FileSource([shared_data / "ztf"]), batch_size=5).run()
    assert _snapshot(store) == _snapshot(ref_store)


def test_stopping_gives_back_the_batch_read_ahead(tmp_path, shared_data):
    messages = _indexed(shared_data)
    _, _, pipe = _pipeline(tmp_path, "stopped")
    source = _ListSource(messages)
    worker = Worker(pipe, source, batch_size=3, decode_ahead=True)
    summary = worker.run(on_batch=lambda res: worker.stop())
    assert summary.batches == 1 and source.commits == [[0, 1, 2]]
    assert source.rewinds == [[3, 4, 5]] and source.pos == 3


@pytest.mark.parametrize("ahead", [False, True])
def test_a_notice_pipeline_without_decode_runs_as_before(ahead):
    """Only a pipeline that can decode separately is read ahead (the notice pipeline is not)."""

    class _Plain:
        metrics = None
        faults = None

        def prepare(self):
            pass

        def process(self, messages):
            return None

        def dead_letter(self, messages, reason, text):
            return None

    assert Worker(_Plain(), _ListSource([]), decode_ahead=ahead).decode_ahead is False
