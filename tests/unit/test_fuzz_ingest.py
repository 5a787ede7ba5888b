"""Fuzzing (issue 11): real ZTF and Rubin packets, mutated, through decode → normalise → associate → store.

Mutations: truncation, bit flips, huge varints (array lengths, block counts) spliced in, wrong
Confluent schema ids, NaN/inf/off-sky coordinates, bad UTF-8 in the object id, implausible and
NaN times in the trigger and in history rows. Each example is one batch of mutated messages
through the embedded pipeline (broker/assemble.py, SQLite store, file sink).

What must hold, per batch: nothing crashes or hangs (hypothesis deadline, pytest timeout);
``messages == messages with packets + empty + dead-lettered``; every dead letter has a reason;
the per-reason counts equal an independent decode of each message; no ``internal_error`` (a
decoder bug). At the end: the DLQ topic holds one message per rejection, and the store holds
every distinct dead letter.

Decoding runs in-process because the ingest limits (broker/ingest/framing.py) refuse what
crashed fastavro (recursive/deep schemas, zero-width array items); a segfault here would kill
pytest, which is a failing run, not a hidden one.

Size: ~300 messages in the normal run; ALBIREO_CHAOS=1 (``make chaos``) runs ≥ 100,000.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import StreamFileSink
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.filtering.runner import InProcessRunner
from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError, SchemaCache, encode_confluent, zigzag
from broker.ingest.registries import schema_id_for
from broker.ingest.validate import validate_packet
from broker.ports import Message

CHAOS = os.environ.get("ALBIREO_CHAOS") == "1"
#: messages to push through: a few hundred normally, ≥ 10^5 under ALBIREO_CHAOS=1.
TARGET = 100_000 if CHAOS else 300
BATCH = (5, 15) if CHAOS else (1, 4)
#: examples to run: 10% over TARGET at the mean batch size, so that a random run still reaches TARGET.
EXAMPLES = int(TARGET * 1.1 / ((BATCH[0] + BATCH[1]) / 2)) + 1

TOTALS: Counter = Counter()


def _records(path: Path) -> tuple[dict, list[dict]]:
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        return reader.writer_schema, list(reader)


def _container(schema: dict, rec: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schema, [rec])
    return buf.getvalue()


def _semantic_variants(schema: dict, rec: dict, *, ztf: bool) -> list[dict]:
    """Copies of a real record with hostile values that still encode (what bytes-level flips rarely hit)."""
    import copy

    out = [rec]
    bad = (math.nan, math.inf, -math.inf, 1e308, -5.0, 400.0)
    times = (math.nan, math.inf, 0.0, 1.7e9, 2_400_000.5 + 99_000.0)
    for v in bad:
        r = copy.deepcopy(rec)
        (r["candidate"] if ztf else r["diaSource"])["ra"] = v
        out.append(r)
        r = copy.deepcopy(rec)
        (r["candidate"] if ztf else r["diaSource"])["dec"] = v
        out.append(r)
    for t in times:
        r = copy.deepcopy(rec)
        if ztf:
            r["candidate"]["jd"] = t
            out.append(r)
            r = copy.deepcopy(rec)
            rows = [row for row in (r.get("prv_candidates") or []) if row.get("jd") is not None]
            if rows:
                rows[0]["jd"] = t if t < 1e9 else 2_400_000.5 + 87_000.0  # 2096: in the future
                out.append(r)
        else:
            r["diaSource"]["midpointMjdTai"] = t
            out.append(r)
            r = copy.deepcopy(rec)
            if r.get("prvDiaSources"):
                r["prvDiaSources"][0]["midpointMjdTai"] = t
                out.append(r)
    return out


@pytest.fixture(scope="module")
def seeds(shared_data, lsst_samples) -> list[bytes]:
    """Real packets (ZTF containers; Rubin containers and Confluent frames), plus hostile-value variants."""
    out: list[bytes] = []
    ztf = sorted(p for p in (shared_data / "ztf").rglob("*.avro") if p.read_bytes()[:4] == b"Obj\x01")
    for i, path in enumerate(ztf):
        out.append(path.read_bytes())
        if i < 3:
            schema, recs = _records(path)
            out.extend(_container(schema, r) for r in _semantic_variants(schema, recs[0], ztf=True)[1:])
    from broker.ingest.decode import default_registry

    reg = default_registry()
    for version in list(lsst_samples)[-3:]:
        schema, recs = _records(lsst_samples[version])
        major, minor = (int(x) for x in version.split("."))
        sid = schema_id_for(major, minor)
        parsed = reg(sid)
        for r in _semantic_variants(schema, recs[0], ztf=False):
            out.append(encode_confluent(r, sid, parsed))
        out.append(lsst_samples[version].read_bytes())
    return out


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    kind = data.draw(st.sampled_from(["none", "truncate", "flip", "varint", "schema_id", "utf8", "many"]))
    buf = bytearray(raw)
    if kind == "truncate":
        return bytes(buf[: data.draw(st.integers(0, len(buf) - 1))])
    if kind in ("flip", "many"):
        for _ in range(data.draw(st.integers(1, 8 if kind == "flip" else 64))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(buf)
    if kind == "varint":  # a huge count/length spliced over 1-3 bytes: array lengths, block counts, sizes
        i = data.draw(st.integers(0, len(buf) - 1))
        n = data.draw(st.sampled_from([2**62, 2**62 - 1, -(2**62), 2**31, 2**40, 10**9, -1]))
        return bytes(buf[:i]) + zigzag(n) + bytes(buf[i + data.draw(st.integers(1, 3)):])
    if kind == "schema_id":
        if buf[:1] == b"\x00" and len(buf) > 5:
            buf[1:5] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        else:  # a container header re-framed as a Confluent frame with a random id
            buf = bytearray(b"\x00" + data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")) + buf[4:]
        return bytes(buf)
    if kind == "utf8":  # invalid UTF-8 over a stretch where the object id / strings live
        i = data.draw(st.integers(0, len(buf) - 1))
        bad = data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        buf[i : i + len(bad)] = bad
        return bytes(buf)
    return bytes(buf)


def _oracle(raw: bytes) -> tuple[str | None, int]:
    """An independent decode of one message: (dead-letter reason or None, packets)."""
    try:
        packets = decode_message(raw, cache=SchemaCache())
        for p in packets:
            validate_packet(p)
    except DecodeError as exc:
        return exc.reason, 0
    return (None, len(packets)) if packets else ("", 0)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp / "fuzz.sqlite", assoc.order)
    sink = StreamFileSink(tmp / "out")
    pipe = build_pipeline(cfg, store, sink, filters=InProcessRunner([]), associator=assoc)
    # one warning per rejection is right for a worker; here it is ~10^5 captured log records
    log = logging.getLogger("albireo.pipeline")
    level = log.level
    log.setLevel(logging.ERROR)
    yield pipe, store, sink, cfg
    log.setLevel(level)
    store.close()


@pytest.mark.timeout(3600 if CHAOS else 300)
def test_mutated_real_packets_are_processed_or_dead_lettered(seeds, pipeline):
    pipe, store, sink, cfg = pipeline
    TOTALS.clear()

    @settings(max_examples=EXAMPLES, deadline=20_000, database=None, derandomize=not CHAOS,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(st.data())
    def one_batch(data: st.DataObject) -> None:
        n = data.draw(st.integers(*BATCH))
        raws = [_mutate(data, data.draw(st.sampled_from(seeds))) for _ in range(n)]
        base = TOTALS["inputs"]
        msgs = [Message(r, "fuzz", 0, base + i) for i, r in enumerate(raws)]
        expect = [_oracle(r) for r in raws]
        res = pipe.process(msgs)
        reasons = Counter(r for r, _ in expect if r)
        ok = sum(1 for r, _ in expect if r is None)
        empty = sum(1 for r, _ in expect if r == "")
        assert res.messages == n
        assert res.rejected == reasons, (res.rejected, reasons)
        assert "internal_error" not in res.rejected
        assert ok + res.empty + res.rejected_total == n and res.empty == empty
        assert res.packets == sum(p for _, p in expect)
        TOTALS.update(inputs=n, processed=ok, empty=res.empty, dead_lettered=res.rejected_total)
        TOTALS.update({f"reason:{k}": v for k, v in res.rejected.items()})
        if CHAOS and TOTALS["inputs"] // 10_000 != base // 10_000:  # progress: ~10 lines in a chaos run
            print(f"fuzz progress: {TOTALS['inputs']} inputs", file=sys.stderr, flush=True)

    one_batch()
    assert TOTALS["inputs"] >= TARGET
    assert TOTALS["processed"] + TOTALS["empty"] + TOTALS["dead_lettered"] == TOTALS["inputs"]
    assert TOTALS["processed"] > 0 and TOTALS["dead_lettered"] > 0  # both outcomes were exercised
    # every rejection reached the DLQ topic; the store keeps each distinct dead letter once
    assert len(sink.read_topic(cfg.kafka.dead_letter_topic)) == TOTALS["dead_lettered"]
    assert 0 < store.counts()["dead_letters"] <= TOTALS["dead_lettered"]
    summary = ", ".join(f"{k}={v}" for k, v in sorted(TOTALS.items()))
    print(f"\nfuzz: {summary}")
