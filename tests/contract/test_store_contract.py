"""The Store contract: every adapter (SQLite, Cassandra) must pass these with the same assertions."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from broker.association import pixels_of
from broker.ports import DeadLetter

from .conftest import ORDER, RADIUS_ARCSEC


def _save(store, loci, cutouts=None):
    alerts = [a for x in loci for a in x.alerts]
    store.save_batch(loci, alerts, cutouts)
    return alerts


def test_round_trip_keeps_every_field(store, locus_factory):
    a = locus_factory(150.1, 2.2, n=5, seed=1, tags=("high_snr",), props={"snr_max": 42.5, "class": "SN Ia"})
    a.catalog_objects = {"gaia_dr3": [{"source_id": 123, "g_mag": 17.25}]}
    a.catalog_version = "cat-v7"
    b = locus_factory(150.2, 2.3, n=3, seed=2)
    _save(store, [a, b])
    got = store.load_loci([a.locus_id, b.locus_id, "ALB-missing"])
    assert set(got) == {a.locus_id, b.locus_id}
    la = got[a.locus_id]
    assert (la.ra, la.dec) == (a.ra, a.dec)  # the mean of its detections, stored as is
    assert la.user_tags == {"high_snr"}
    assert la.user_properties == {"snr_max": 42.5, "class": "SN Ia"}
    assert la.internal_properties["num_alerts"] == 5
    assert la.internal_properties["ztf_object_id"] == "ZTF24aa000001"
    assert la.catalog_objects == {"gaia_dr3": [{"source_id": 123, "g_mag": 17.25}]}
    assert la.catalog_version == "cat-v7"
    assert la.provenance["high_snr"].filter == "test_filter"
    assert la.provenance["property:class"].revision == "r1"
    assert [x.alert_id for x in la.alerts] == [x.alert_id for x in a.alerts]
    for mine, theirs in zip(a.alerts, la.alerts, strict=True):
        assert theirs.mjd == mine.mjd and theirs.passband == mine.passband and theirs.survey == mine.survey
        assert theirs.properties == mine.properties and theirs.is_history == mine.is_history
        assert theirs.locus_id == a.locus_id
        if mine.mag is None:
            assert theirs.mag is None and math.isnan(theirs.ra) and theirs.maglim == 20.4
        else:
            assert theirs.mag == mine.mag and theirs.ra == mine.ra
    without = store.load_loci([b.locus_id], with_alerts=False)[b.locus_id]
    assert without.alerts == [] and without.internal_properties["num_alerts"] == 3


def test_replay_changes_nothing(store, locus_factory):
    loci = [locus_factory(10.0 + i * 0.01, -5.0, n=3, seed=10 + i) for i in range(5)]
    cut = {loci[0].alerts[-1].alert_id: {"science": b"\x1f\x8bFITS-bytes"}}
    _save(store, loci, cut)
    before = store.counts()
    first = {k: (v.user_properties, [a.alert_id for a in v.alerts]) for k, v in store.load_loci(
        [x.locus_id for x in loci]).items()}
    _save(store, loci, cut)
    assert store.counts() == before
    assert before["loci"] == 5 and before["alerts"] == 15
    again = {k: (v.user_properties, [a.alert_id for a in v.alerts]) for k, v in store.load_loci(
        [x.locus_id for x in loci]).items()}
    assert again == first
    assert store.cutouts(loci[0].alerts[-1].alert_id) == {"science": b"\x1f\x8bFITS-bytes"}
    assert store.cutouts("no-such-alert") == {}


def test_update_replaces_locus_and_appends_alerts(store, locus_factory):
    x = locus_factory(200.0, 30.0, n=3, seed=3)
    _save(store, [x])
    extra = locus_factory(200.0, 30.0, n=6, seed=3).alerts[3:]
    added = x.add_alerts(extra)
    x.tag("nuclear_transient")
    store.save_batch([x], added)
    got = store.load_loci([x.locus_id])[x.locus_id]
    assert got.internal_properties["num_alerts"] == 6
    assert got.user_tags == {"nuclear_transient"}
    assert [a.alert_id for a in store.alerts_for_locus(x.locus_id)] == [a.alert_id for a in x.alerts]
    mjds = [a.mjd for a in store.alerts_for_locus(x.locus_id)]
    assert mjds == sorted(mjds)


def test_locus_positions_and_existing_ids(store, locus_factory):
    loci = [locus_factory(45.0 + 0.001 * i, 10.0, seed=20 + i) for i in range(3)]
    far = locus_factory(300.0, -60.0, seed=30)
    alerts = _save(store, [*loci, far])
    pix = pixels_of(np.array([x.ra for x in loci]), np.array([x.dec for x in loci]), ORDER)
    pos = store.locus_positions(pix.tolist())
    assert sorted(pos.locus_ids) == sorted(x.locus_id for x in loci)
    byid = dict(zip(pos.locus_ids, zip(pos.ra.tolist(), pos.dec.tolist(), pos.pixel.tolist(), strict=True),
                    strict=True))
    for x, p in zip(loci, pix.tolist(), strict=True):
        assert byid[x.locus_id] == (x.ra, x.dec, p)
    assert store.locus_positions([]).locus_ids == []
    never = dataclasses.replace(alerts[0], alert_id="never-seen")
    assert store.existing_alert_ids([alerts[0], alerts[-1], never]) == {alerts[0].alert_id, alerts[-1].alert_id}


def test_iter_loci_window(store, locus_factory):
    old = [locus_factory(1.0 + i * 0.01, 1.0, mjd0=59000.0, seed=40 + i) for i in range(3)]
    new = [locus_factory(2.0 + i * 0.01, 1.0, mjd0=60500.0, seed=50 + i) for i in range(4)]
    _save(store, old + new)
    seen = [x for batch in store.iter_loci(batch_size=2, since_mjd=60000.0) for x in batch]
    assert sorted(x.locus_id for x in seen) == sorted(x.locus_id for x in new)
    assert all(len(x.alerts) == 4 for x in seen)
    everything = [x for batch in store.iter_loci(batch_size=3) for x in batch]
    assert len(everything) == 7


def test_dead_letters_newest_first(store):
    now = time.time()
    for i in range(3):
        store.record_dead_letter(DeadLetter("ztf-alerts:0", f"reason {i}", "bad avro", b"\x00\x01" * i,
                                            now + i, {"offset": str(i)}))
    got = store.dead_letters(limit=2)
    assert [d.reason for d in got] == ["reason 2", "reason 1"]
    assert got[0].payload == b"\x00\x01\x00\x01" and got[0].headers == {"offset": "2"}
    assert store.counts()["dead_letters"] == 3


def test_claims_pick_one_winner(store, locus_factory):
    stored = locus_factory(80.0, -20.0, seed=60)
    _save(store, [stored])
    half = 0.5 / 3600
    got = store.claim_new_loci([
        ("ALBnear", stored.ra, stored.dec + half),  # within 1" of a stored locus → that locus
        ("ALBfresh", 81.0, -20.0),                  # nothing there → itself
        ("ALBtwin", 81.0 + half / 2, -20.0),        # near a candidate of the same call: the caller's
    ], RADIUS_ARCSEC)                               # association kept them apart, so itself too
    assert got == {"ALBnear": stored.locus_id, "ALBfresh": "ALBfresh", "ALBtwin": "ALBtwin"}
    # A later claim sees the earlier one; replaying returns the same answer.
    assert store.claim_new_loci([("ALBlate", 81.0, -20.0 - half)], RADIUS_ARCSEC) == {"ALBlate": "ALBfresh"}
    # the nearest of two claimed loci wins
    assert store.claim_new_loci([("ALBmid", 81.0 + half / 2.5, -20.0)], RADIUS_ARCSEC) == {"ALBmid": "ALBtwin"}
    assert store.claim_new_loci([("ALBfresh", 81.0, -20.0)], RADIUS_ARCSEC) == {"ALBfresh": "ALBfresh"}
    pix = pixels_of(np.array([81.0]), np.array([-20.0]), ORDER)
    assert sorted(store.locus_positions(pix.tolist()).locus_ids) == ["ALBfresh", "ALBtwin"]


def _edge_crossing(store_order: int) -> tuple[float, float, float]:
    """(ra, dec0, dec1): two points 0.6" apart in dec on either side of an association-pixel edge."""
    ra, step = 150.0, 0.6 / 3600
    dec = np.arange(2.0, 2.01, 0.1 / 3600)
    pix = pixels_of(np.full(dec.size, ra), dec, store_order)
    k = int(np.flatnonzero(np.diff(pix))[0])
    return ra, float(dec[k] - step / 2), float(dec[k] + step / 2)


def test_a_locus_that_moves_changes_pixel(store, locus_factory):
    """A locus's mean crosses into the next association pixel: it is found there, once, and no longer
    in the old one (also for a locus that was only claimed before)."""
    from broker.alert import Alert
    from broker.locus import Locus

    ra, dec0, dec1 = _edge_crossing(ORDER)
    p0, p1 = pixels_of(np.array([ra, ra]), np.array([dec0, dec1]), ORDER).tolist()
    assert p0 != p1
    lid = "ALBmover"
    assert store.claim_new_loci([(lid, ra, dec0)], RADIUS_ARCSEC) == {lid: lid}
    locus = Locus(lid, ra, dec0, stored_position=(ra, dec0))
    first = Alert("ztf_candidate:1", 1, 60000.0, ra, dec0, "g", 18.0, 0.1, 20.0, {}, "ZTF24move", False)
    store.save_batch([locus], locus.add_alerts([first]))
    assert store.locus_positions([p0]).locus_ids == [lid]
    # three more detections at dec1 pull the mean across the edge
    more = [Alert(f"ztf_candidate:{k}", 1, 60000.0 + k, ra, dec1, "g", 18.0, 0.1, 20.0, {}, "ZTF24move", False)
            for k in (2, 3, 4)]
    loaded = store.load_loci([lid])[lid]
    added = loaded.add_alerts(more)
    assert pixels_of(np.array([loaded.ra]), np.array([loaded.dec]), ORDER).tolist() == [p1]
    store.save_batch([loaded], added)
    assert store.locus_positions([p0]).locus_ids == []
    moved = store.locus_positions([p0, p1])
    assert moved.locus_ids == [lid] and moved.pixel.tolist() == [p1]
    assert (moved.ra[0], moved.dec[0]) == (loaded.ra, loaded.dec)
    again = store.load_loci([lid])[lid]
    assert (again.ra, again.dec) == (loaded.ra, loaded.dec) and again.internal_properties["num_alerts"] == 4


def test_dead_letters_are_kept_once_per_message(store):
    letter = DeadLetter("ztf-alerts[0]@17", "bad_magic", "not avro", b"\x01garbage", time.time(), {"x": "1"})
    assert store.record_dead_letter(letter) is True
    again = DeadLetter(letter.source, letter.reason, letter.message, letter.payload, letter.received_at + 60, {})
    assert store.record_dead_letter(again) is False  # the same message rejected again: a replay
    other = DeadLetter("ztf-alerts[0]@18", "bad_magic", "not avro", b"\x01garbage", time.time(), {})
    assert store.record_dead_letter(other) is True  # the same bytes at another offset: another message
    assert store.counts()["dead_letters"] == 2
    assert sorted(d.source for d in store.dead_letters()) == ["ztf-alerts[0]@17", "ztf-alerts[0]@18"]


def test_claim_radius_must_match_store_order(store):
    with pytest.raises(ValueError, match="association order"):
        store.claim_new_loci([("ALBx", 1.0, 1.0)], 60.0)


def test_recorded_outputs_replace_and_read_back(store):
    """Exactly-once support: what an input position produced is kept, replaced whole, and read back."""
    from broker.ports import Output

    a = [Output("albireo.loci.high_snr", b"ALB1", b"\x00v1", {"albireo.stream": "high_snr"}, "t[0]@5"),
         Output("albireo.loci.fast_riser", b"ALB1", b"\x00v2", {"albireo.stream": "fast_riser"}, "t[0]@5")]
    store.record_outputs({"t[0]@5": a, "t[0]@6": [], "t[1]@9": [Output("x", None, b"z", {}, "t[1]@9")]})
    got = store.recorded_outputs(["t[0]@5", "t[0]@6", "t[1]@9", "t[2]@1"])
    assert got["t[0]@5"] == a and got["t[1]@9"][0].key is None
    assert "t[0]@6" not in got and "t[2]@1" not in got  # an empty record and an unknown position: nothing
    store.record_outputs({"t[0]@5": a[1:]})  # a retry that produced less replaces the record
    assert store.recorded_outputs(["t[0]@5"])["t[0]@5"] == a[1:]
    store.record_outputs({"t[0]@5": []})
    assert store.recorded_outputs(["t[0]@5"]) == {}


def test_existing_ids_with_and_without_a_survey_object(store, locus_factory):
    """Stores may look alerts up by survey object; an alert without one (a solar-system source) is found too."""
    x = locus_factory(12.0, -5.0, seed=41)
    stray = dataclasses.replace(x.alerts[-1], alert_id="lsst_source:77", object_id=None, survey=4,
                                properties={"lsst_ssObjectId": 9})
    stray.locus_id = x.locus_id
    store.save_batch([x], [*x.alerts, stray])
    assert store.existing_alert_ids([*x.alerts, stray]) == {a.alert_id for a in [*x.alerts, stray]}
    # the same id asked under another object is a different alert: not found (ids are per object)
    other = dataclasses.replace(x.alerts[0], alert_id="ztf_candidate:never", object_id="ZTF24zz000000")
    assert store.existing_alert_ids([other]) == set()
    assert store.existing_alert_ids([]) == set()
