"""broker.replay: devkit → real ZTF packets round trip, jitter, stream files, replay to a file sink."""

from __future__ import annotations

import io
import math

import fastavro
import numpy as np
import pytest

from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file, write_stream_file
from broker.ingest.decode import DecodeError, decode_message
from broker.ingest.framing import _read_long, read_container, read_container_header
from broker.ops.devkit_ztf import _container_header, devkit_ztf_packets, ensure_demo_ztf_stream, ztf_schema
from broker.ops.loadgen import ReplayStats, TokenBucket, jitter_packet, replay, shift_position
from broker.ops.samples import devkit_locus, lsst_sample_packets

ANT_KEYS = ("ant_mjd", "ant_ra", "ant_dec", "ant_mag", "ant_magerr", "ant_maglim", "ant_passband", "ant_survey")
#: devkit properties schema 3.2 has no field for (documented in broker.replay / schemas/ztf/README.md).
DROPPED = {"ztf_drb", "ztf_drbversion"}


@pytest.fixture(scope="module")
def locus() -> dict:
    return devkit_locus()


@pytest.fixture(scope="module")
def packets(locus) -> list[bytes]:
    return list(devkit_ztf_packets(locus))


@pytest.fixture(scope="module")
def decoded(packets):
    return [decode_message(p) for p in packets]


def test_every_detection_round_trips(locus, decoded):
    by_id = {a["id"]: a for a in locus["alerts"]}
    detections = [a for a in locus["alerts"] if a["id"].startswith("ztf_candidate:")]
    assert len(decoded) == len(detections) == 3552
    seen = []
    for (pkt,) in (d for d in decoded):
        t = pkt.trigger
        src = by_id[t.alert_id]
        seen.append(t.alert_id)
        ant = t.properties
        for k in ANT_KEYS:
            assert ant[k] == src["properties"][k], (t.alert_id, k)
        for k, v in src["properties"].items():
            if k.startswith("ztf_") and k not in DROPPED:
                assert t.properties[k] == v, (t.alert_id, k)
        assert t.properties["ztf_schemavsn"] == "3.2"
    # time order, each detection exactly once
    assert seen == [a["id"] for a in sorted(detections, key=lambda a: a["mjd"])]


def test_history_is_the_previous_30_days_and_upper_limit_ids_are_real(locus, decoded):
    by_id = {a["id"]: a for a in locus["alerts"]}
    upper = set()
    for (pkt,) in decoded:
        for h in pkt.history:
            assert h.alert_id in by_id, h.alert_id  # every history id is a real devkit id
            assert pkt.trigger.mjd - 30.0 <= h.mjd < pkt.trigger.mjd
            src = by_id[h.alert_id]
            assert h.properties["ant_maglim"] == src["properties"]["ant_maglim"]
            if h.alert_id.startswith("ztf_upper_limit:"):
                upper.add(h.alert_id)
                assert h.object_id == pkt.trigger.object_id
    n_upper = sum(a["id"].startswith("ztf_upper_limit:") for a in locus["alerts"])
    # upper limits of an object show up only in that object's packets: each one in at least one packet,
    # as each reached ANTARES
    assert len(upper) == n_upper == 407


def test_object_ids_follow_the_devkit(locus, decoded):
    by_id = {a["id"]: a for a in locus["alerts"]}
    named = 0
    for (pkt,) in decoded:
        own = by_id[pkt.trigger.alert_id]["properties"].get("ztf_object_id")
        if own is not None:
            named += 1
            assert pkt.trigger.object_id == own
        assert pkt.trigger.object_id in {"ZTF18aauseln", "ZTF18aauselm", "ZTF18adjrdnb"}
    assert named == 1343


def test_hand_assembled_bodies_equal_fastavro(packets):
    header, sync = _container_header("3.2")
    parsed = ztf_schema("3.2")
    for raw in packets[::400]:
        assert raw.startswith(header) and raw.endswith(sync)
        count, pos = _read_long(raw, len(header))
        size, pos = _read_long(raw, pos)
        assert count == 1
        body = raw[pos : pos + size]
        (record,) = read_container(raw)[1]
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)
        assert out.getvalue() == body


def test_stream_file_round_trip_and_demo_cache(tmp_path, packets):
    path = tmp_path / "few.avro-stream"
    assert write_stream_file(packets[:25], path) == 25
    assert list(iter_stream_file(path)) == packets[:25]
    src = FileSource([path])
    assert [m.value for m in src.poll_batch(100, 0)] == packets[:25]

    demo = ensure_demo_ztf_stream(tmp_path / "cache")
    mtime = demo.stat().st_mtime_ns
    assert ensure_demo_ztf_stream(tmp_path / "cache") == demo
    assert demo.stat().st_mtime_ns == mtime  # cached, not rewritten
    first = next(iter_stream_file(demo))
    assert first == packets[0]
    assert not list((tmp_path / "cache").glob(".demo-*"))  # no temp file left behind


# --------------------------------------------------------------------------- jitter


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


_CHANGED_LEAVES = {"candid", "objectId", "ra", "dec", "ranr", "decnr", "jd"}


def test_jitter_changes_only_ids_positions_and_times(packets):
    raw = packets[1800]
    rng = np.random.default_rng(3)
    out = jitter_packet(raw, rng=rng, index=7, max_shift_deg=2.0, time_shift_days=10.0)
    (orig,) = read_container(raw)[1]
    (new,) = read_container(out)[1]
    assert read_container_header(out).schema.name == "ztf.alert"
    assert out[: read_container_header(raw).data_start] == raw[: read_container_header(raw).data_start]
    a, b = dict(_flatten(orig)), dict(_flatten(new))
    assert a.keys() == b.keys()
    changed = {k.rsplit(".", 1)[-1] for k in a if not (a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]))}
    assert changed == _CHANGED_LEAVES
    assert new["candidate"]["jd"] == pytest.approx(orig["candidate"]["jd"] + 10.0)
    for p, q in zip(orig["prv_candidates"], new["prv_candidates"], strict=True):
        assert q["jd"] == pytest.approx(p["jd"] + 10.0)
        assert (p["candid"] is None) == (q["candid"] is None)
    (pkt,) = decode_message(out)
    (src,) = decode_message(raw)
    assert pkt.trigger.mag == src.trigger.mag and len(pkt.history) == len(src.history)


def test_jitter_moves_trigger_and_history_together(packets):
    raw = packets[2000]
    (orig,) = read_container(raw)[1]
    (new,) = read_container(jitter_packet(raw, rng=np.random.default_rng(11), index=0,
                                          max_shift_deg=5.0, time_shift_days=0.0))[1]
    dra = new["candidate"]["ra"] - orig["candidate"]["ra"]
    ddec = new["candidate"]["dec"] - orig["candidate"]["dec"]
    assert abs(dra) > 1e-6 and abs(ddec) > 1e-6 and abs(dra) <= 5 and abs(ddec) <= 5
    dets = [(p, q) for p, q in zip(orig["prv_candidates"], new["prv_candidates"], strict=True) if p["ra"] is not None]
    assert dets
    for p, q in dets:
        assert q["ra"] - p["ra"] == pytest.approx(dra, abs=1e-9)
        assert q["dec"] - p["dec"] == pytest.approx(ddec, abs=1e-9)
    # same seed, same copy; other seed, other place
    again = jitter_packet(raw, rng=np.random.default_rng(11), index=0, max_shift_deg=5.0, time_shift_days=0.0)
    other = jitter_packet(raw, rng=np.random.default_rng(12), index=0, max_shift_deg=5.0, time_shift_days=0.0)
    assert again == jitter_packet(raw, rng=np.random.default_rng(11), index=0, max_shift_deg=5.0, time_shift_days=0.0)
    assert other != again


def test_jitter_ids_unique_over_1000_copies(packets):
    raw = packets[3000]
    rng = np.random.default_rng(0)
    trig, objs, hist = set(), set(), set()
    n_hist = None
    for i in range(1000):
        (pkt,) = decode_message(jitter_packet(raw, rng=rng, index=i, max_shift_deg=1.0, time_shift_days=0.0))
        trig.add(pkt.trigger.alert_id)
        objs.add(pkt.trigger.object_id)
        ids = {h.alert_id for h in pkt.history}
        n_hist = len(ids)
        hist |= ids
        assert pkt.trigger.object_id.startswith("ZTF18") and len(pkt.trigger.object_id) == 12
    assert len(trig) == 1000 and len(objs) == 1000
    assert n_hist > 0 and len(hist) == 1000 * n_hist
    (src,) = decode_message(raw)
    assert src.trigger.alert_id not in trig and src.trigger.object_id not in objs


def test_history_ids_keep_pointing_at_their_copies(packets):
    """A detection's copy and the copy of the packet whose history holds it get the same id."""
    earlier, later = packets[3000], packets[3001]
    (e,) = decode_message(jitter_packet(earlier, rng=np.random.default_rng(1), index=5, max_shift_deg=1.0,
                                        time_shift_days=0.0))
    (lt,) = decode_message(jitter_packet(later, rng=np.random.default_rng(1), index=5, max_shift_deg=1.0,
                                         time_shift_days=0.0))
    (e0,) = decode_message(earlier)
    (l0,) = decode_message(later)
    assert e0.trigger.alert_id in {h.alert_id for h in l0.history}
    assert e.trigger.alert_id in {h.alert_id for h in lt.history}


@pytest.mark.parametrize(
    ("ra", "dec", "dra", "ddec", "want"),
    [
        (359.5, 10.0, 1.0, 0.0, (0.5, 10.0)),
        (0.5, 10.0, -1.0, 0.0, (359.5, 10.0)),
        (10.0, 89.5, 0.0, 1.0, (190.0, 89.5)),
        (200.0, -89.0, 0.0, -3.0, (20.0, -88.0)),
        (10.0, 0.0, 0.0, 0.0, (10.0, 0.0)),
    ],
)
def test_shift_position_wraps_and_reflects(ra, dec, dra, ddec, want):
    r, d = shift_position(ra, dec, dra, ddec)
    assert r == pytest.approx(want[0]) and d == pytest.approx(want[1])
    assert 0.0 <= r < 360.0 and -90.0 <= d <= 90.0


def test_jitter_near_the_pole_keeps_the_locus_together(packets):
    """The devkit object sits at dec +65.6: a 30° push crosses the pole for every row alike."""
    raw = packets[100]
    (orig,) = read_container(raw)[1]

    class _Fixed:
        def uniform(self, lo, hi, size):
            return np.array([0.0, 29.0])

    (new,) = read_container(jitter_packet(raw, rng=_Fixed(), index=0, max_shift_deg=30.0, time_shift_days=0.0))[1]
    c = new["candidate"]
    assert 0.0 <= c["ra"] < 360.0 and c["dec"] <= 90.0
    assert c["dec"] == pytest.approx(180.0 - (orig["candidate"]["dec"] + 29.0))
    assert c["ra"] == pytest.approx((orig["candidate"]["ra"] + 180.0) % 360.0)
    for q in new["prv_candidates"]:
        if q["ra"] is not None:  # angular distance to the trigger stays arcsecond-small
            cosd = (math.sin(math.radians(c["dec"])) * math.sin(math.radians(q["dec"]))
                    + math.cos(math.radians(c["dec"])) * math.cos(math.radians(q["dec"]))
                    * math.cos(math.radians(c["ra"] - q["ra"])))
            assert math.degrees(math.acos(min(1.0, cosd))) * 3600 < 5.0


@pytest.mark.parametrize("path", lsst_sample_packets(), ids=lambda p: f"{p.parents[2].name}.{p.parents[1].name}")
def test_lsst_samples_jitter_and_decode(path):
    raw = path.read_bytes()
    out = jitter_packet(raw, rng=np.random.default_rng(5), index=42, max_shift_deg=1.0, time_shift_days=3.0)
    (rec,) = read_container(raw)[1]
    if rec["diaSource"].get("midpointMjdTai", rec["diaSource"].get("midPointTai")) > 1e8:
        # v3.0–v7.4 samples: seconds where the schema says MJD; the copy is refused like the original
        (copy,) = read_container(out)[1]
        assert copy["diaSource"]["diaSourceId"] != rec["diaSource"]["diaSourceId"]
        for packet in (raw, out):
            with pytest.raises(DecodeError) as exc:
                decode_message(packet)
            assert exc.value.reason == "implausible_time"
        return
    (src,) = decode_message(raw)
    (pkt,) = decode_message(out)
    assert pkt.schema == src.schema
    assert pkt.trigger.alert_id != src.trigger.alert_id
    assert pkt.trigger.object_id != src.trigger.object_id
    assert pkt.trigger.mjd == pytest.approx(src.trigger.mjd + 3.0)
    assert pkt.trigger.mag == src.trigger.mag and pkt.trigger.passband == src.trigger.passband
    assert (pkt.trigger.ra, pkt.trigger.dec) != (src.trigger.ra, src.trigger.dec)
    assert len(pkt.history) == len(src.history)


def test_lsst_confluent_frame_stays_confluent():
    from broker.ingest.decode import default_registry
    from broker.ingest.framing import encode_confluent
    from broker.ingest.registries import schema_id_for

    path = lsst_sample_packets()[-1]
    (record,) = read_container(path.read_bytes())[1]
    major, minor = int(path.parents[2].name), int(path.parents[1].name)
    sid = schema_id_for(major, minor)
    raw = encode_confluent(record, sid, default_registry()(sid))
    out = jitter_packet(raw, rng=np.random.default_rng(2), index=1, max_shift_deg=1.0, time_shift_days=1.0)
    assert out[:5] == raw[:5]
    (pkt,) = decode_message(out)
    (src,) = decode_message(raw)
    assert pkt.trigger.alert_id != src.trigger.alert_id
    assert pkt.trigger.mjd == pytest.approx(src.trigger.mjd + 1.0)


# --------------------------------------------------------------------------- replay (file sink)


def test_replay_cycles_jitters_and_keys(tmp_path, packets):
    src = tmp_path / "in.avro-stream"
    write_stream_file(packets[:10], src)
    out = tmp_path / "out.avro-stream"
    sink = StreamFileSink(out)
    stats = replay([src], topic="t", sink=sink, count=25, jitter=True, seed=4, progress=False)
    sink.close()
    assert isinstance(stats, ReplayStats)
    assert stats.messages == 25 and stats.jittered == 25 and stats.inputs == 10
    msgs = list(iter_stream_file(out))
    assert len(msgs) == 25 and stats.bytes == sum(map(len, msgs))
    ids = [decode_message(m)[0].trigger.alert_id for m in msgs]
    assert len(set(ids)) == 25
    mjd0 = decode_message(msgs[0])[0].trigger.mjd
    mjd10 = decode_message(msgs[10])[0].trigger.mjd
    assert mjd10 == pytest.approx(mjd0 + 1.0)  # second pass: one day later


def test_replay_plain_sends_bytes_unchanged(tmp_path, packets):
    class ListSink(StreamFileSink):
        def __init__(self):
            self.got = []

        def publish(self, topic, key, value, headers=None):
            self.got.append((topic, key, value))

        def flush(self, timeout_s=30.0):
            pass

        def close(self):
            pass

    src = tmp_path / "in.avro-stream"
    write_stream_file(packets[:5], src)
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"Obj\x01garbage")
    sink = ListSink()
    stats = replay([src, bad], topic="ztf", sink=sink, progress=False)
    assert stats.messages == 6 and stats.undecodable == 1
    assert [v for _, _, v in sink.got[:5]] == packets[:5]
    assert sink.got[5] == ("ztf", None, b"Obj\x01garbage")
    assert {k for _, k, _ in sink.got[:5]} <= {b"ZTF18aauseln", b"ZTF18aauselm", b"ZTF18adjrdnb"}


def test_token_bucket_sleeps_only_when_empty():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(1000):
        bucket.take()
    # 1000 msgs at 1000/s, bucket of 20: ~1 s of (fake) sleeping in ~50 sleeps, not one per message
    assert 0.95 <= sum(slept) <= 0.99
    assert 40 <= len(slept) <= 55
    assert now[0] == pytest.approx(sum(slept))
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_replay_visits_revisit_objects_and_each_history_row_is_stored_once(tmp_path, packets):
    """``visits``: later messages of an object keep its place, object id and history, with a new,
    later trigger; the pipeline then stores every history row once and keeps one locus per object."""
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.assemble import build_pipeline
    from broker.association import Associator
    from broker.config import load_config
    from broker.ports import Message

    src = tmp_path / "in.avro-stream"
    newest_lsst = lsst_sample_packets()[-1].read_bytes()
    write_stream_file([*packets[-4:], newest_lsst], src)
    out = tmp_path / "out.avro-stream"
    sink = StreamFileSink(out)
    stats = replay([src], topic="t", sink=sink, count=15, jitter=True, seed=3, progress=False, visits=3,
                   days_per_visit=2.0, max_shift_deg=5.0)
    sink.close()
    msgs = list(iter_stream_file(out))
    assert stats.messages == 15 == len(msgs) and stats.undecodable == 0
    pkts = [decode_message(m)[0] for m in msgs]
    assert len({p.trigger.alert_id for p in pkts}) == 15
    by_object: dict[str, list] = {}
    for p in pkts:
        by_object.setdefault(p.trigger.object_id, []).append(p)
    assert len(by_object) == 5 and all(len(v) == 3 for v in by_object.values())
    assert any(p.trigger.alert_id.startswith("lsst_") for p in pkts)
    for visits in by_object.values():
        first = visits[0]
        assert first.history, "every input packet here carries history"
        for v, p in enumerate(visits):
            assert (p.trigger.ra, p.trigger.dec) == (first.trigger.ra, first.trigger.dec)
            assert [h.alert_id for h in p.history] == [h.alert_id for h in first.history]
            assert p.trigger.mjd == pytest.approx(first.trigger.mjd + 2.0 * v)
    # the first pass is what a single-visit replay of 5 messages sends
    sink = StreamFileSink(tmp_path / "single.avro-stream")
    replay([src], topic="t", sink=sink, count=5, jitter=True, seed=3, progress=False, max_shift_deg=5.0)
    sink.close()
    assert list(iter_stream_file(tmp_path / "single.avro-stream")) == msgs[:5]

    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / "s.sqlite", assoc.order)
    pipe = build_pipeline(cfg, store, StreamFileSink(tmp_path / "tagged"), associator=assoc)
    res = pipe.process([Message(m, "t", 0, i) for i, m in enumerate(msgs)])
    assert res.packets == 15 and res.duplicates == 0 and res.rejected_total == 0
    distinct = {a.alert_id for p in pkts for a in (p.trigger, *p.history)}
    assert store.counts()["alerts"] == len(distinct)
    assert store.counts()["loci"] == 5


def test_cli_replay_visits_needs_jitter_and_writes_revisits(tmp_path, packets):
    from click.testing import CliRunner

    from broker.cli import main

    src = tmp_path / "in.avro-stream"
    write_stream_file(packets[-2:], src)
    out = tmp_path / "out.avro-stream"
    runner = CliRunner()
    bad = runner.invoke(main, ["replay", str(src), "--topic", "t", "--out", str(out), "--visits", "2"])
    assert bad.exit_code != 0 and "needs --jitter" in bad.output
    ok = runner.invoke(main, ["replay", str(src), "--topic", "t", "--out", str(out), "--jitter", "--visits", "2",
                              "--count", "4"])
    assert ok.exit_code == 0, ok.output
    objects = [decode_message(m)[0].trigger.object_id for m in iter_stream_file(out)]
    assert len(objects) == 4 and objects[:2] == objects[2:] and objects[0] != objects[1]
