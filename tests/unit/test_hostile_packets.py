"""Hostile packets (issue 11): each attack is reproduced and shown contained.

Contained means: the message is a dead letter with a clear reason, the other messages of the
batch are processed, and messages == packets + rejected. The bounds are ``[ingest]`` settings
(broker/config.py, docs/security.md).
"""

from __future__ import annotations

import io
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest

import broker.ingest.framing as framing
from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import StreamFileSink
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import ConfigError, load_config, validate
from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError, IngestLimits, SchemaCache, configure_limits, zigzag
from broker.ports import Message

SYNC = b"0123456789abcdef"
GOOD = Path("ztf") / "fink-datasim" / "697252845015010002.avro"


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """Every test starts and ends with the default limits (some tighten them to stay fast)."""
    configure_limits(IngestLimits())
    yield
    configure_limits(IngestLimits())


def _avro_bytes(b: bytes) -> bytes:
    return zigzag(len(b)) + b


def container(schema: dict | bytes, count: int, data: bytes, codec: str = "null") -> bytes:
    """An Avro container built by hand, so that schema, counts and block bytes can be hostile."""
    schema_json = schema if isinstance(schema, bytes) else json.dumps(schema).encode()
    meta = (zigzag(2) + _avro_bytes(b"avro.schema") + _avro_bytes(schema_json)
            + _avro_bytes(b"avro.codec") + _avro_bytes(codec.encode()) + zigzag(0))
    if codec == "deflate":
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = comp.compress(data) + comp.flush()
    return b"Obj\x01" + meta + SYNC + zigzag(count) + zigzag(len(data)) + data + SYNC


def reason_of(raw: bytes) -> str:
    with pytest.raises(DecodeError) as exc:
        decode_message(raw, cache=SchemaCache())
    return exc.value.reason


def test_recursive_embedded_schema_is_refused_before_fastavro_reads_it() -> None:
    # A linked list: 10 KB of union index 1 would recurse 10,000 levels in fastavro's C reader.
    schema = {"type": "record", "name": "n", "fields": [{"name": "next", "type": ["null", "n"]}]}
    raw = container(schema, 1, b"\x02" * 10_000 + b"\x00")
    assert len(raw) < 11_000
    assert reason_of(raw) == "recursive_schema"
    nested = {"type": "record", "name": "a", "namespace": "x", "fields": [
        {"name": "b", "type": {"type": "record", "name": "b", "fields": [
            {"name": "back", "type": {"type": "array", "items": "x.a"}}]}}]}
    assert reason_of(container(nested, 1, b"\x00")) == "recursive_schema"


def test_deep_and_large_schemas_are_refused() -> None:
    deep: dict | str = "long"
    for _ in range(100):
        deep = {"type": "array", "items": deep}
    schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": deep}]}
    assert reason_of(container(schema, 1, b"\x00")) == "schema_too_deep"
    very_deep = b'{"type":' * 100_000 + b'"long"' + b"}" * 100_000  # json.loads would hit RecursionError
    assert reason_of(container(very_deep, 1, b"\x00")) in ("schema_too_large", "bad_schema")
    big = {"type": "record", "name": "r", "doc": "x" * 300_000, "fields": [{"name": "a", "type": "long"}]}
    assert reason_of(container(big, 1, b"\x00")) == "schema_too_large"


def test_real_schemas_are_admitted(shared_data: Path) -> None:
    containers = [p for p in sorted((shared_data / "ztf").rglob("*.avro")) if p.read_bytes()[:4] == b"Obj\x01"]
    assert len(containers) > 40
    for path in containers:  # (one sample is a schemaless body, which has no embedded schema)
        assert decode_message(path.read_bytes(), cache=SchemaCache()), path


def test_schema_cache_is_bounded_lru() -> None:
    cache = SchemaCache(max_entries=8)
    for i in range(100):
        schema = {"type": "record", "name": f"r{i}", "fields": [{"name": "a", "type": "long"}]}
        cache.get(json.dumps(schema).encode())
    assert len(cache) == 8 and cache.misses == 100
    # the most recently used stays in after newer ones arrive
    keep = json.dumps({"type": "record", "name": "r99", "fields": [{"name": "a", "type": "long"}]}).encode()
    cache.get(keep)
    assert cache.hits == 1


def test_deflate_bomb_is_refused() -> None:
    configure_limits(IngestLimits(max_decompressed_bytes=1024 * 1024))
    schema = {"type": "record", "name": "r", "fields": [{"name": "s", "type": "bytes"}]}
    raw = container(schema, 1, zigzag(4 * 1024 * 1024) + bytes(4 * 1024 * 1024), codec="deflate")
    assert len(raw) < 10_000  # 4 MiB of zeros deflate to a few KB
    assert reason_of(raw) == "decompressed_too_large"


def test_huge_array_count_ends_at_the_input_not_in_memory() -> None:
    schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}]}
    raw = container(schema, 1, zigzag(2**62) + b"\x02" * 100)
    assert reason_of(raw) == "schema_mismatch"  # fastavro meets the end of the block after 100 items
    nulls = {"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}]}
    assert reason_of(container(nulls, 1, zigzag(2**62) + b"\x00")) == "bad_schema"  # zero-byte items
    empty = {"type": "record", "name": "r", "fields": [{"name": "a", "type": {
        "type": "map", "values": {"type": "record", "name": "e", "fields": []}}}]}
    assert reason_of(container(empty, 1, zigzag(2**62) + b"\x00")) == "bad_schema"
    # a block count of 2**62 records: each needs bytes, so the block runs out
    one = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}
    assert reason_of(container(one, 2**62, b"\x02" * 10)) == "schema_mismatch"


def test_an_8_mb_string_is_refused() -> None:
    schema = {"type": "record", "name": "r", "fields": [{"name": "s", "type": "string"}]}
    s = b"a" * (8 * 1024 * 1024)
    assert reason_of(container(schema, 1, _avro_bytes(s))) == "field_too_large"
    assert reason_of(container(schema, 1, _avro_bytes(s), codec="deflate")) == "field_too_large"


def test_an_oversized_message_is_refused_before_decoding() -> None:
    configure_limits(IngestLimits(max_message_bytes=64 * 1024))
    assert reason_of(b"Obj\x01" + bytes(65 * 1024)) == "message_too_large"


def test_ingest_settings_are_validated() -> None:
    assert load_config(env={"ALBIREO_INGEST__MAX_FIELD_BYTES": "65536"}).ingest.max_field_bytes == 65536
    with pytest.raises(ConfigError, match="ingest.max_schema_depth"):
        load_config(env={"ALBIREO_INGEST__MAX_SCHEMA_DEPTH": "1000"})
    cfg = load_config(env={})
    cfg.ingest.max_message_bytes = 10
    with pytest.raises(ConfigError, match="ingest.max_message_bytes"):
        validate(cfg)


# ---------------------------------------------------------------------------------------------
def _setup(tmp_path: Path):
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / "s.sqlite", assoc.order)
    sink = StreamFileSink(tmp_path / "out")
    return store, sink, build_pipeline(cfg, store, sink, associator=assoc)


def _reencode(path: Path, mutate) -> bytes:
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema = reader.writer_schema
        rec = next(reader)
    mutate(rec)
    buf = io.BytesIO()
    fastavro.writer(buf, schema, [rec])
    return buf.getvalue()


def test_hostile_history_rows_are_dropped_counted_and_never_become_locus_alert(tmp_path, shared_data) -> None:
    good = shared_data / GOOD

    def poison(rec: dict) -> None:
        rows = [r for r in rec["prv_candidates"] if r.get("jd") is not None]
        assert len(rows) >= 3
        rows[0]["jd"] = 2_400_000.5 + 87_000.0  # MJD 87000: the year 2096, plausible but in the future
        rows[1]["jd"] = math.nan
        rows[2]["jd"] = 1.7e9  # seconds, not days

    raw = _reencode(good, poison)
    schema = {"type": "record", "name": "n", "fields": [{"name": "next", "type": ["null", "n"]}]}
    msgs = [Message(raw, "t", 0, 0), Message(container(schema, 1, b"\x02" * 10_000 + b"\x00"), "t", 0, 1)]
    store, _, pipe = _setup(tmp_path)
    res = pipe.process(msgs)
    assert res.packets == 1 and res.rejected["recursive_schema"] == 1
    assert res.messages == res.packets + res.empty + res.rejected_total
    assert res.history_dropped == {"history_in_future": 1, "history_nan_time": 1,
                                   "history_implausible_time": 1}
    (locus,) = store.load_loci([lid for b in store.iter_loci() for lid in (x.locus_id for x in b)]).values()
    trigger_mjd = decode_message(raw, cache=SchemaCache())[0].trigger.mjd
    assert locus.alert.mjd == trigger_mjd and not locus.alert.is_history
    assert all(math.isfinite(a.mjd) and a.mjd <= trigger_mjd for a in locus.alerts)
    assert len(locus.alerts) == len(decode_message(raw, cache=SchemaCache())[0].alerts) - 3
    assert {d.reason for d in store.dead_letters()} == {"recursive_schema"}


def test_rubin_history_with_a_nan_time_is_rejected_with_a_reason(lsst_samples) -> None:
    path = lsst_samples[max(lsst_samples, key=lambda v: tuple(map(int, v.split("."))))]

    def poison(rec: dict) -> None:
        prv = rec.get("prvDiaSources")
        if not prv:
            pytest.fail("the Rubin sample has no prvDiaSources to poison")
        prv[0]["midpointMjdTai"] = math.nan

    raw = _reencode(path, poison)
    assert reason_of(raw) == "implausible_time"


def test_a_future_trigger_is_implausible(shared_data) -> None:
    raw = _reencode(shared_data / GOOD, lambda r: r["candidate"].__setitem__("jd", 2_400_000.5 + 99_000.0))
    with pytest.raises(DecodeError) as exc:
        from broker.ingest.validate import validate_packet

        for p in decode_message(raw, cache=SchemaCache()):
            validate_packet(p)
    assert exc.value.reason == "implausible_time"


def test_limits_are_installed_from_config() -> None:
    from broker.assemble import configure_ingest

    cfg = load_config(env={})
    cfg.ingest.max_field_bytes = 2048
    configure_ingest(cfg)
    assert framing.LIMITS.max_field_bytes == 2048


def test_the_recursive_schema_attack_is_real_without_admission() -> None:
    """Why admission is needed: fastavro alone dies by a signal on it (run in a child that can die)."""
    import subprocess
    import sys

    code = ("import io, fastavro\n"
            "s = fastavro.parse_schema({'type': 'record', 'name': 'n', 'fields': "
            "[{'name': 'next', 'type': ['null', 'n']}]})\n"
            "fastavro.schemaless_reader(io.BytesIO(b'\\x02' * 100000 + b'\\x00'), s)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode != 0  # a segfault (-11) or RecursionError: either way not decodable in-process


def test_an_error_text_quoting_a_lone_surrogate_is_stored(tmp_path) -> None:
    """Found by the chaos fuzz run: a schema JSON escape "\\ud800" made the dead-letter text unstorable."""
    schema = b'{"type": "record", "name": "r", "fields": [{"name": "a", "type": "x.\\ud800at"}]}'
    store, _, pipe = _setup(tmp_path)
    res = pipe.process([Message(container(schema, 1, b"\x02"), "t", 0, 0)])
    assert res.rejected_total == 1 and res.dead_letters_new == 1
    (letter,) = store.dead_letters()
    assert letter.reason == "bad_schema" and "ud800" in letter.message


def test_an_oversized_object_id_is_a_dead_letter_and_the_batch_goes_on(tmp_path, shared_data) -> None:
    """Ids become storage keys: a 100,000-character objectId (Cassandra keys stop at 64 KiB) would
    fail its batch's store write on every retry, so it must be refused at ingest with a reason."""
    good = (shared_data / GOOD).read_bytes()
    huge = _reencode(shared_data / GOOD, lambda r: r.__setitem__("objectId", "ZTF" + "x" * 100_000))
    store, _, pipe = _setup(tmp_path)
    res = pipe.process([Message(huge, "t", 0, 0), Message(good, "t", 0, 1)])
    assert res.rejected == {"oversized_id": 1}
    assert res.packets == 1 and res.messages == res.packets + res.empty + res.rejected_total == 2
    (letter,) = store.dead_letters()
    assert letter.reason == "oversized_id" and "100003 characters" in letter.message
    assert len(letter.message) < 1000  # the message quotes a prefix, not the id
    assert store.counts()["loci"] == 1


def test_an_id_at_the_bound_is_admitted_and_one_over_is_not(shared_data) -> None:
    from broker.ingest.validate import MAX_ID_CHARS, validate_packet

    def packet_with(object_id: str):
        raw = _reencode(shared_data / GOOD, lambda r: r.__setitem__("objectId", object_id))
        (p,) = decode_message(raw, cache=SchemaCache())
        return p

    at_bound = packet_with("Z" * MAX_ID_CHARS)
    assert any(len(h.alert_id) > MAX_ID_CHARS for h in at_bound.history)  # upper limits embed it
    validate_packet(at_bound)
    with pytest.raises(DecodeError) as exc:
        validate_packet(packet_with("Z" * (MAX_ID_CHARS + 1)))
    assert exc.value.reason == "oversized_id" and "trigger object id" in str(exc.value)
