"""One object, one locus — on ANTARES's own loci and on a replay of long-lived real sources.

antares-devkit ships two real ANTARES loci. Replayed through the pipeline as the ZTF packets they came
from (``broker/ops/devkit_ztf.py``), each must come back as one locus holding every one of
ANTARES's alerts, at ANTARES's position (the mean of its detections). Then long-lived sources recur:
the devkit source, a copy of it 2.5″ away and one 40″ away and months later, and every real packet
of ``../shared/data/ztf`` re-observed three more times (copies with new ids and later times,
``broker/ops/loadgen.py``), all in one time-ordered stream: every source is one locus, every
locus one source, and replaying the stream, or running it in other batch sizes, gives the same store.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, write_stream_file
from broker.assemble import build_pipeline
from broker.association import Associator, pixels_of
from broker.config import load_config
from broker.ingest.decode import decode_message
from broker.locus import counts_for_position
from broker.ops.devkit_ztf import devkit_ztf_packets, ensure_demo_ztf_stream
from broker.ops.loadgen import jitter_packet
from broker.ops.samples import devkit_locus
from broker.worker import Worker

#: what ANTARES's position of ANT202037lq is off the mean of its 3,552 detections (measured: 0.0138″).
ANTARES_OFFSET_ARCSEC = 0.02


def _pipeline(tmp_path: Path, name: str):
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    cfg.filters.builtin = []
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / f"{name}.sqlite", assoc.order)
    return store, build_pipeline(cfg, store, StreamFileSink(tmp_path / f"{name}-out"), associator=assoc)


def _run(pipe, paths, batch_size: int):
    return Worker(pipe, FileSource(paths), batch_size=batch_size).run().result


def _snapshot(store) -> dict:
    out = {}
    for batch in store.iter_loci():
        for x in batch:
            rows = store.alerts_for_locus(x.locus_id)
            assert x.internal_properties["num_alerts"] == len(rows) == len(x.alerts), x.locus_id
            out[x.locus_id] = (x.ra, x.dec, sorted(a.alert_id for a in rows), x.internal_properties)
    return out


def _sep(a, b) -> float:
    return float(SkyCoord(a[0] * u.deg, a[1] * u.deg).separation(SkyCoord(b[0] * u.deg, b[1] * u.deg)).arcsec)


def _mean(alerts) -> tuple[float, float]:
    """The mean direction of the detections, by numpy (the reference for a locus's position)."""
    pts = np.radians(np.array([(a.ra, a.dec) for a in alerts if counts_for_position(a)]))
    v = np.column_stack([np.cos(pts[:, 1]) * np.cos(pts[:, 0]), np.cos(pts[:, 1]) * np.sin(pts[:, 0]),
                         np.sin(pts[:, 1])]).sum(axis=0)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360), float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))


@pytest.fixture(scope="module")
def devkit_stream(tmp_path_factory) -> Path:
    return ensure_demo_ztf_stream(tmp_path_factory.mktemp("devkit"))


def test_ant202037lq_is_one_locus_with_antares_alerts_and_position(tmp_path, devkit_stream):
    ant = devkit_locus("large_locus")
    store, pipe = _pipeline(tmp_path, "a")
    res = _run(pipe, [devkit_stream], batch_size=500)
    assert res.packets == 3552 and res.rejected_total == 0
    snap = _snapshot(store)
    assert len(snap) == 1, {k: len(v[2]) for k, v in snap.items()}
    ((lid, (ra, dec, ids, props)),) = snap.items()
    assert ids == sorted(a["id"] for a in ant["alerts"])  # all 3,959: 3,552 detections, 407 upper limits
    assert props["num_alerts"] == ant["old_properties"]["num_alerts"] == 3959 == res.alerts_new
    for key in ("num_mag_values", "newest_alert_id", "oldest_alert_id", "brightest_alert_id",
                "newest_alert_observation_time", "oldest_alert_observation_time", "brightest_alert_magnitude"):
        assert props[key] == ant["old_properties"][key], key
    (locus,) = store.load_loci([lid]).values()
    assert _sep((ra, dec), _mean(locus.alerts)) < 1e-6  # the mean of its detections
    assert _sep((ra, dec), (ant["ra"], ant["dec"])) < ANTARES_OFFSET_ARCSEC  # and ANTARES's position
    # stable id: derived from the founding (first) alert
    first = min(locus.alerts, key=lambda a: (a.mjd, a.alert_id))
    assert lid.startswith("ALB2018") and first.alert_id == ant["old_properties"]["oldest_alert_id"]

    # replaying a batch changes nothing (whole streams and other batch sizes: the long-lived test below)
    batch = FileSource([devkit_stream]).poll_batch(3552, 0)[1700:2100]
    again = pipe.process(batch)
    assert again.duplicates == 400 and again.alerts_new == 0 and _snapshot(store) == snap


def test_the_small_devkit_locus_is_one_locus_at_antares_position(tmp_path):
    ant = devkit_locus("small_locus")
    path = tmp_path / "small.avro-stream"
    write_stream_file(devkit_ztf_packets(ant), path)
    store, pipe = _pipeline(tmp_path, "s")
    _run(pipe, [path], batch_size=10)
    ((ra, dec, ids, props),) = _snapshot(store).values()
    assert ids == [a["id"] for a in ant["alerts"]] and props["num_alerts"] == 1
    assert _sep((ra, dec), (ant["ra"], ant["dec"])) < 1e-9  # one detection: its position (ANTARES: to 1 ulp)


def _shared_packets(shared_data) -> list[bytes]:
    out = []
    for path in sorted((shared_data / "ztf").glob("*/*.avro")):
        raw = path.read_bytes()
        try:
            decode_message(raw)
        except Exception:  # the one unreadable packet: not a source
            continue
        out.append(raw)
    return out


def _edge_shift(triggers) -> float:
    """A dec shift (degrees, > 60″) putting the first trigger and the mean of all in different pixels."""
    order = Associator.from_config(load_config(env={}).association).order
    first = (triggers[0].ra, triggers[0].dec)
    mean = _mean(triggers)
    shifts = np.arange(60.0, 80.0, 0.005) / 3600
    p0 = pixels_of(np.full(shifts.size, first[0]), first[1] + shifts, order)
    p1 = pixels_of(np.full(shifts.size, mean[0]), mean[1] + shifts, order)
    apart = np.flatnonzero(p0 != p1)
    assert apart.size, "no pixel edge between the founder and the mean in 20″"
    return float(shifts[apart[apart.size // 2]])


@pytest.fixture(scope="module")
def long_lived(tmp_path_factory, devkit_stream, shared_data):
    """A time-ordered stream of recurring real sources, and the source of every alert id in it."""
    devkit = [m.value for m in FileSource([devkit_stream])][:200]  # 2018-05 … 2019-03, outliers included
    triggers = [decode_message(r)[0].trigger for r in devkit]
    dec0 = triggers[0].dec
    sources: list[tuple[str, list[bytes]]] = [
        ("devkit", devkit),
        ("devkit+2.5\"", [jitter_packet(r, index=1, shift_deg=(0.0, 2.5 / 3600)) for r in devkit]),
        ("devkit+40\"+400d", [jitter_packet(r, index=2, shift_deg=(40 / 3600 / math.cos(math.radians(dec0)), 0.0),
                                            time_shift_days=400.0) for r in devkit]),
        # a copy placed so that an association-pixel edge runs between its founding alert and where
        # its mean ends: the locus moves to the next pixel on its way, its position row with it
        ("devkit-across-an-edge", [jitter_packet(r, index=3, shift_deg=(0.0, _edge_shift(triggers)))
                                   for r in devkit]),
    ]
    shared = _shared_packets(shared_data)
    for k, raw in enumerate(shared):  # each shared packet's source seen again 3 times, 3 days apart
        sources.append((f"shared{k}", [raw] + [jitter_packet(raw, index=10 + j, time_shift_days=3.0 * (j + 1))
                                               for j in range(3)]))
    label: dict[str, str] = {}
    timed = []
    for name, packets in sources:
        for raw in packets:
            (p,) = decode_message(raw)
            for a in p.alerts:
                label.setdefault(a.alert_id, name)
            timed.append((p.trigger.mjd, p.trigger.alert_id, raw))
    path = tmp_path_factory.mktemp("long-lived") / "stream.avro-stream"
    write_stream_file([raw for *_, raw in sorted(timed)], path)
    return path, label, len(shared)


def test_long_lived_sources_recur_in_one_locus_each(tmp_path, long_lived, shared_data):
    path, label, n_shared = long_lived
    # the shared packets alone: how many places they are (some are one object seen twice)
    plain_store, plain = _pipeline(tmp_path, "plain")
    plain.process(FileSource(sorted((shared_data / "ztf").glob("*/*.avro"))).poll_batch(1000, 0))
    plain_loci = {a.alert_id: x.locus_id for b in plain_store.iter_loci() for x in b for a in x.alerts}

    store, pipe = _pipeline(tmp_path, "ll")
    res = _run(pipe, [path], batch_size=64)
    assert res.rejected_total == 0 and res.alerts_new == len(label) == store.counts()["alerts"]
    snap = _snapshot(store)
    source_of_locus = {}
    for lid, (_, _, ids, _) in snap.items():
        names = {label[i] for i in ids}
        shared_places = {plain_loci.get(i) for i in ids if label[i].startswith("shared")} - {None}
        assert len(names) == 1 or len(shared_places) == 1, (lid, names)  # one source (or one place seen twice)
        source_of_locus[lid] = names
    copies = ("devkit", "devkit+2.5\"", "devkit+40\"+400d", "devkit-across-an-edge")
    for name in copies:
        assert sum(name in v for v in source_of_locus.values()) == 1, name  # each source in exactly one locus
    n_places = len(set(plain_loci.values()))
    assert len(snap) == len(copies) + n_places  # recurring did not found one more locus anywhere
    order = store.association_order
    (edge,) = [lid for lid, v in source_of_locus.items() if v == {"devkit-across-an-edge"}]
    founder = min((a for a in store.alerts_for_locus(edge) if counts_for_position(a)), key=lambda a: (a.mjd, a.alert_id))
    now = snap[edge][:2]
    p_found, p_now = pixels_of(np.array([founder.ra, now[0]]), np.array([founder.dec, now[1]]), order).tolist()
    assert p_found != p_now  # it did move to another pixel
    assert store.locus_positions([p_found]).locus_ids == [] and edge in store.locus_positions([p_now]).locus_ids
    # every locus stands at the mean of its detections
    for lid, locus in store.load_loci(list(snap)).items():
        assert _sep((locus.ra, locus.dec), _mean(locus.alerts)) < 1e-6, lid

    again = _run(pipe, [path], batch_size=64)
    assert again.alerts_new == 0 and _snapshot(store) == snap
    store_b, pipe_b = _pipeline(tmp_path, "ll-b")
    _run(pipe_b, [path], batch_size=501)
    assert _snapshot(store_b) == snap
