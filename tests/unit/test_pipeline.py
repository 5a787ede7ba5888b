"""The embedded pipeline end to end: idempotence, batch-size independence, bad input, filters as guests."""

from __future__ import annotations

import io
import math
from pathlib import Path

import fastavro
import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.emit import decode_locus_message
from broker.filtering.contract import BaseFilter
from broker.filtering.runner import InProcessRunner, load_builtin_filters, load_filter_class
from broker.ingest.decode import decode_message
from broker.ports import Message
from broker.worker import Worker


def _setup(tmp_path: Path, name: str = "s", filters: InProcessRunner | None = None, batch_size: int = 50,
           object_radius_arcsec: float | None = None):
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    if object_radius_arcsec is not None:
        cfg.association.object_radius_arcsec = object_radius_arcsec
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / f"{name}.sqlite", assoc.order)
    sink = StreamFileSink(tmp_path / f"{name}-out")
    pipe = build_pipeline(cfg, store, sink, filters=filters, associator=assoc)
    return cfg, store, sink, pipe


def _messages(paths) -> list[Message]:
    src = FileSource(paths)
    return src.poll_batch(10_000, 0)


def _snapshot(store: SQLiteStore) -> dict:
    out = {}
    for batch in store.iter_loci():
        for locus in batch:
            out[locus.locus_id] = (
                sorted(a.alert_id for a in locus.alerts),
                locus.internal_properties,
                sorted(locus.tags),
                locus.user_properties,
            )
    return out


@pytest.fixture(scope="module")
def ztf_messages(shared_data):
    return _messages([shared_data / "ztf"])


def test_pipeline_is_idempotent_and_independent_of_batch_size(tmp_path, ztf_messages):
    _, store, sink, pipe = _setup(tmp_path, "a")
    first = pipe.process(ztf_messages)
    assert first.packets == len(ztf_messages) - 1 and first.rejected == {"bad_magic": 1}
    snap = _snapshot(store)
    counts = store.counts()
    again = pipe.process(ztf_messages)  # a replay after a crash
    assert again.duplicates == first.packets and again.alerts_new == 0 and again.loci_created == 0
    assert _snapshot(store) == snap
    assert store.counts()["alerts"] == counts["alerts"] and store.counts()["loci"] == counts["loci"]

    _, store_b, _, pipe_b = _setup(tmp_path, "b")
    for i in range(0, len(ztf_messages), 7):
        pipe_b.process(ztf_messages[i : i + 7])
    assert _snapshot(store_b) == snap


def test_normalised_values_reach_the_store(tmp_path, shared_data):
    path = shared_data / "ztf" / "ztf-avro-alert" / "2019_01_10_739260766315010006.avro"
    with open(path, "rb") as fh:
        (raw,) = list(fastavro.reader(fh))
    _, store, _, pipe = _setup(tmp_path)
    pipe.process(_messages([path]))
    (batch,) = list(store.iter_loci())
    (locus,) = batch
    cand = raw["candidate"]
    trig = next(a for a in locus.alerts if a.alert_id == f"ztf_candidate:{cand['candid']}")
    assert trig.mjd == pytest.approx(cand["jd"] - 2400000.5, abs=1e-9)
    assert (trig.ra, trig.dec, trig.mag, trig.magerr) == (cand["ra"], cand["dec"], cand["magpsf"], cand["sigmapsf"])
    assert trig.properties["ztf_rb"] == cand["rb"]
    prv = raw["prv_candidates"] or []
    # the locus stands at the mean of its detections: the trigger and the history rows with a position
    pts = [(cand["ra"], cand["dec"])] + [(p["ra"], p["dec"]) for p in prv if p.get("ra") is not None]
    assert len(pts) > 1
    assert _sep_arcsec((locus.ra, locus.dec), _mean_position(pts)) < 1e-6
    assert _sep_arcsec((locus.ra, locus.dec), (cand["ra"], cand["dec"])) > 0.01  # it did move
    assert locus.internal_properties["num_alerts"] == 1 + len(prv)
    assert locus.internal_properties["ztf_object_id"] == raw["objectId"]
    n_limits = sum(1 for p in prv if p["candid"] is None)
    assert sum(1 for a in locus.alerts if a.survey == 2) == n_limits
    assert store.cutouts(trig.alert_id)["science"] == raw["cutoutScience"]["stampData"]


def _mean_position(points) -> tuple[float, float]:
    """Mean direction of (ra, dec) points in degrees, by numpy: the reference for the locus position."""
    import numpy as np

    ra, dec = np.radians(np.array(points, dtype=float)).T
    v = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=0)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360), float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))


def _sep_arcsec(a, b) -> float:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return float(SkyCoord(a[0] * u.deg, a[1] * u.deg).separation(SkyCoord(b[0] * u.deg, b[1] * u.deg)).arcsec)


def _reencode(path: Path, mutate) -> bytes:
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema = reader.writer_schema
        rec = next(reader)
    mutate(rec)
    buf = io.BytesIO()
    fastavro.writer(buf, schema, [rec])
    return buf.getvalue()


def test_history_shared_by_two_loci_of_one_batch_is_stored_and_counted_once(tmp_path, shared_data):
    """Two loci 1.3″ apart whose packets carry the same history rows (ZTF's prv_candidates cover
    1.5″; the survey-object rule is off, so the shared object does not join them): each history alert
    goes to one locus, so every num_alerts counts the rows it has."""
    good = shared_data / "ztf" / "fink-datasim" / "697252845115015002.avro"

    def neighbour(r):
        cand = r["candidate"]
        cand["candid"] += 1
        cand["ra"] += 1.3 / 3600 / math.cos(math.radians(cand["dec"]))
        r["candid"] = cand["candid"]

    raw = good.read_bytes()
    twin = _reencode(good, neighbour)
    _, store, _, pipe = _setup(tmp_path, object_radius_arcsec=0.0)
    res = pipe.process([Message(raw, "t", 0, 0), Message(twin, "t", 0, 1)])
    loci = [x for b in store.iter_loci() for x in b]
    assert len(loci) == 2 and res.loci_created == 2
    (p1,), (p2,) = decode_message(raw), decode_message(twin)
    shared = {h.alert_id for h in p1.history} & {h.alert_id for h in p2.history}
    assert len(shared) >= 20
    rows = {lid: store.alerts_for_locus(lid) for lid in (x.locus_id for x in loci)}
    assert sum(x.internal_properties["num_alerts"] for x in loci) == sum(map(len, rows.values()))
    assert res.alerts_new == store.counts()["alerts"] == len(shared) + 2
    for x in loci:
        assert x.internal_properties["num_alerts"] == len(rows[x.locus_id])


def test_bad_input_is_dead_lettered_and_counted(tmp_path, shared_data, lsst_samples):
    good = shared_data / "ztf" / "fink-datasim" / "697252845015010002.avro"
    nan_ra = _reencode(good, lambda r: r["candidate"].__setitem__("ra", math.nan))
    pole = _reencode(good, lambda r: r["candidate"].__setitem__("dec", 95.0))
    raw = good.read_bytes()
    msgs = [
        Message(nan_ra, "t", 0, 0),
        Message(pole, "t", 0, 1),
        Message(raw[: len(raw) // 2], "t", 0, 2),  # truncated
        Message(b"", "t", 0, 3),
        Message(b"\x00\x00\x00\x99\x99garbage", "t", 0, 4),  # Confluent frame, unknown schema id
        Message(raw, "t", 0, 5),
    ]
    _, store, sink, pipe = _setup(tmp_path)
    res = pipe.process(msgs)
    assert res.packets == 1
    assert res.rejected_total == 5 and res.messages == res.packets + res.rejected_total
    assert res.rejected["invalid_coordinates"] == 2
    assert {"empty", "unknown_schema_id"} <= set(res.rejected)
    letters = store.dead_letters()
    assert len(letters) == 5
    assert {bytes(m.value) for m in msgs[:5]} == {d.payload for d in letters}
    dlq = sink.read_topic("albireo.dlq")
    assert sorted(dlq) == sorted(m.value for m in msgs[:5])


class _Raises(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "never", "description": ""}]

    def _run(self, locus):
        raise RuntimeError("boom in a user filter")


class _TagsAll(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "seen", "description": ""}]

    def _run(self, locus):
        locus.tag("seen")
        locus.set_property("seen_mag", float(locus.alert.mag or 0.0))


def test_a_raising_filter_is_recorded_and_the_others_still_run(tmp_path, ztf_messages):
    runner = InProcessRunner([load_filter_class(_Raises, priority=0), load_filter_class(_TagsAll, priority=1)],
                          max_error_rate=0.5, window_runs=10, min_runs=10)
    _, store, sink, pipe = _setup(tmp_path, filters=runner)
    res = pipe.process(ztf_messages)
    raising, tagging = runner.filters
    assert raising.stats.errors >= 10 and not raising.enabled  # disabled automatically: 10 of 10 runs failed
    assert "RuntimeError: boom" in raising.disabled_reason
    err = raising.recent_errors[0]
    assert err.exception == "RuntimeError" and "boom in a user filter" in err.traceback
    assert res.filter_errors == raising.stats.errors
    assert res.tags["seen"] == res.packets  # one tag per ingested packet (per-alert rounds)
    msgs = sink.read_topic("albireo.loci.seen")
    assert len(msgs) == res.packets
    rec = decode_locus_message(msgs[0])
    assert rec["provenance"]["seen"]["filter"] == "_TagsAll"
    assert rec["provenance"]["property:seen_mag"]["revision"] == tagging.revision
    stored = store.load_loci([rec["locus_id"]])[rec["locus_id"]]
    assert stored.provenance["seen"].filter == "_TagsAll"


def test_worker_dead_letters_a_message_that_breaks_a_stage(tmp_path, ztf_messages):
    """A bug met by one message (here: the store refuses one locus) costs that message, not the stream."""
    _, store, sink, pipe = _setup(tmp_path)
    (victim,) = decode_message(ztf_messages[5].value)
    original = store.save_batch

    def save_batch(loci, alerts, cutouts=None):
        if any(a.alert_id == victim.trigger.alert_id for a in alerts):
            raise ValueError("this locus cannot be written")
        return original(loci, alerts, cutouts)

    store.save_batch = save_batch
    worker = Worker(pipe, FileSource([m.source for m in ztf_messages]), batch_size=16)
    summary = worker.run()
    r = summary.result
    assert r.rejected["internal_error"] == 1
    assert r.packets + r.rejected_total == r.messages == len(ztf_messages)
    (letter,) = [d for d in store.dead_letters() if d.reason == "internal_error"]
    assert letter.payload == ztf_messages[5].value and "cannot be written" in letter.message
    assert victim.trigger.alert_id not in store.existing_alert_ids([victim.trigger])


def test_builtin_filters_tag_real_data(tmp_path, ztf_messages):
    runner = InProcessRunner(load_builtin_filters(["high_snr", "fast_riser", "nearby_galaxy"]))
    _, store, _, pipe = _setup(tmp_path, filters=runner)
    res = pipe.process(ztf_messages)
    assert res.tags["high_snr"] >= 1
    for batch in store.iter_loci():
        for locus in batch:
            if "high_snr" in locus.tags:
                assert locus.user_properties["newest_alert_snr"] > 50


def test_rubin_confluent_and_schemaless_payloads(tmp_path, lsst_samples):
    """Rubin framings: Confluent wire format (schema id = major*100+minor) and schemaless with a set version."""
    from broker.ingest.decode import default_registry
    from broker.ingest.framing import encode_confluent, encode_schemaless
    from broker.ingest.registries import schema_id_for

    reg = default_registry()
    path = lsst_samples["7.1"]
    with open(path, "rb") as fh:
        (rec,) = list(fastavro.reader(fh))
    # the sample's times are Unix seconds where its schema says MJD (rejected: test_normalize_lsst);
    # framings are tested here, so the times get the schema's unit
    for row in [rec["diaSource"], *(rec.get("prvDiaSources") or ()), *(rec.get("prvDiaForcedSources") or ()),
                *(rec.get("prvDiaNondetectionLimits") or ())]:
        row["midpointMjdTai"] = 60902.993305483615
    parsed = reg.by_version("7.1")
    confluent = encode_confluent(rec, schema_id_for(7, 1), parsed)
    schemaless = encode_schemaless(rec, parsed)

    cfg, store, _, _ = _setup(tmp_path)
    assoc = Associator(cfg.association.radius_arcsec)
    pipe = build_pipeline(cfg, store, StreamFileSink(tmp_path / "o"), associator=assoc)
    pipe.lsst_schema_version = "7.1"
    res = pipe.process([Message(confluent, "rubin", 0, 0)])
    assert res.packets == 1 and res.rejected_total == 0
    res = pipe.process([Message(schemaless, "rubin", 0, 1)])
    assert res.duplicates == 1  # the same diaSource, whatever the framing
    (batch,) = list(store.iter_loci())
    trig = next(a for a in batch[0].alerts if a.alert_id == f"lsst_diasource:{rec['diaSource']['diaSourceId']}")
    assert trig.survey == 4 and trig.ra == rec["diaSource"]["ra"]
