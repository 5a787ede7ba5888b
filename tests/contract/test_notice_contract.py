"""The multi-messenger parts of the Store and Index contracts, on every adapter alike.

Store: notices (with their sky maps, chunked on Cassandra), revisions of an event in order, event
records by id and by time. Index: event documents, and the region query (``LocusQuery.region``)
that finds stored loci inside a credible region without a scan.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from broker.adapters.search.document import event_document, locus_document
from broker.multimessenger import revisions
from broker.multimessenger.localization import Circle, region_ranges
from broker.multimessenger.parse import parse_notice
from broker.ports import EventQuery, LocusQuery, QueryError, SkyRegion


def _lvk(shared_data, name: str):
    return parse_notice((shared_data / "lvk" / f"MS181101ab-{name}.json").read_bytes())


def test_notices_and_their_sky_maps_round_trip(store, shared_data):
    n = _lvk(shared_data, "preliminary")
    big = n.skymap + b"\0" * (2_500_000 - len(n.skymap))  # more than two Cassandra chunks
    store.put_notice(n.record(), big)
    got = store.notice(n.notice_id)
    assert got == json.loads(json.dumps(n.record()))
    assert store.notice_skymap(n.notice_id) == big
    assert store.notice("nope") is None and store.notice_skymap("nope") is None
    store.put_notice(n.record(), big)  # idempotent
    assert [r["notice_id"] for r in store.notices("MS181101ab")] == [n.notice_id]


def test_revisions_come_back_in_order_whatever_the_arrival(store, shared_data):
    names = ["update", "earlywarning", "retraction", "initial", "preliminary"]
    notices = {name: _lvk(shared_data, name) for name in names}
    for name in names:  # arrival order scrambled
        store.put_notice(notices[name].record(), notices[name].skymap)
    kinds = [r["kind"] for r in store.notices("MS181101ab")]
    assert kinds == ["EARLY_WARNING", "PRELIMINARY", "INITIAL", "UPDATE", "RETRACTION"]
    assert store.notices("S000000x") == []


def test_event_records_by_id_and_by_time(store, shared_data):
    ev = None
    for name in ("preliminary", "update"):
        ev, _ = revisions.apply(ev, _lvk(shared_data, name), window_days=(1.0, 14.0), now=100.0)
    store.put_event(ev)
    assert store.event("MS181101ab") == json.loads(json.dumps(ev))
    mjd = ev["event_mjd"]
    assert [e["event_id"] for e in store.events(mjd - 1, mjd + 1)] == ["MS181101ab"]
    assert store.events(mjd + 1, mjd + 2) == []
    assert [e["event_id"] for e in store.events(status="active")] == ["MS181101ab"]
    moved = dict(ev, event_mjd=mjd + 10, status="retracted")  # an event's time and status can change
    store.put_event(moved)
    assert store.events(mjd - 1, mjd + 1) == []
    assert [e["status"] for e in store.events(mjd + 9, mjd + 11)] == ["retracted"]
    assert store.events(status="active") == []
    other = dict(ev, event_id="S230914ak", event_mjd=mjd + 5)
    store.put_event(other)
    assert [e["event_id"] for e in store.events()] == ["S230914ak", "MS181101ab"]  # oldest first


def test_event_documents_are_searchable(index, shared_data):
    docs = []
    for k, (eid, messenger, status, test) in enumerate([("S1", "gw", "active", False), ("S2", "gw", "retracted", False),
                                                        ("IceCube-1", "neutrino", "active", False),
                                                        ("MS3", "gw", "active", True)]):
        docs.append(event_document({"event_id": eid, "messenger": messenger, "status": status, "test": test,
                                    "event_mjd": 60000.0 + k, "event_time": f"t{k}", "notices": k + 1,
                                    "summary": {"areas": {"50": 1.0 * k, "90": 3.0 * k}, "center": [10.0, 20.0]}}))
    index.upsert_events(docs)
    index.refresh()
    everything = index.search_events(EventQuery())
    assert [d["event_id"] for d in everything.hits] == ["MS3", "IceCube-1", "S2", "S1"] and everything.total == 4
    assert [d["event_id"] for d in index.search_events(EventQuery(messenger="gw", status="active")).hits] == ["MS3", "S1"]
    assert [d["event_id"] for d in index.search_events(EventQuery(include_test=False, since_mjd=60001)).hits] == [
        "IceCube-1", "S2"]
    assert index.get_event("S2")["area90"] == 3.0 and index.get_event("nope") is None
    with pytest.raises(QueryError):
        index.search_events(EventQuery(status="bogus"))


def test_region_queries_find_exactly_the_loci_inside(index, locus_factory):
    """Loci on a grid around a neutrino circle: the region query returns a superset, the exact check the rest."""
    circle = Circle(150.0, 20.0, 1.0, 0.9)
    rng = np.random.default_rng(7)
    ra = 150.0 + rng.uniform(-3, 3, 300)
    dec = 20.0 + rng.uniform(-3, 3, 300)
    loci = [locus_factory(float(r), float(d), n=2, seed=i, name=f"ZTF24re{i:05d}") for i, (r, d) in enumerate(zip(ra, dec,
                                                                                                                  strict=True))]
    loci[0].grav_wave_events_metadata["S1"] = {"gracedb_id": "S1"}
    loci[1].neutrino_events_metadata["IceCube-1"] = {"event_id": "IceCube-1"}
    index.upsert([locus_document(x) for x in loci])
    index.refresh()
    depth, ranges = region_ranges(circle.moc(90), 100)
    got, q = set(), LocusQuery(region=SkyRegion(depth, [tuple(r) for r in ranges.tolist()]), limit=50, sort="locus_id")
    while True:
        res = index.search(q)
        got |= {h["locus_id"] for h in res.hits}
        if res.next_cursor is None:
            break
        q.search_after = res.next_cursor
    level, _ = circle.containment(ra, dec)
    inside = {x.locus_id for x, lv in zip(loci, level, strict=True) if lv <= 90}
    assert 10 < len(inside) < 200
    assert inside <= got  # nothing inside is missed
    assert len(got) < len(loci)  # and it is not a scan
    # events: both GW and neutrino ids are searchable, GW ids stay ANTARES's grav_wave_events
    assert [h["locus_id"] for h in index.search(LocusQuery(events=["IceCube-1"])).hits] == [loci[1].locus_id]
    assert [h["locus_id"] for h in index.search(LocusQuery(events=["S1"])).hits] == [loci[0].locus_id]
    assert index.summary().events == {"IceCube-1": 1, "S1": 1}
    with pytest.raises(QueryError):
        index.search(LocusQuery(region=SkyRegion(30, [(0, 1)])))
    with pytest.raises(QueryError):
        index.search(LocusQuery(region=SkyRegion(4, [(5, 2)])))


def test_outgoing_alert_revisions_by_number_never_rewritten(store):
    """``put_outgoing``/``outgoing``: one row per (event, record_number), in number order whatever the arrival."""
    for n in (3, 1, 2, 10):
        store.put_outgoing({"event_id": "IceCube-1", "record_number": n, "alert_type": "update",
                            "circular": f"revision {n}\n", "neutrino": {"record_number": n}})
    store.put_outgoing({"event_id": "IceCube-2", "record_number": 1, "alert_type": "initial"})
    got = store.outgoing("IceCube-1")
    assert [r["record_number"] for r in got] == [1, 2, 3, 10]  # numerically, not as text
    assert got[0]["circular"] == "revision 1\n" and got[3]["neutrino"] == {"record_number": 10}
    assert [r["record_number"] for r in store.outgoing("IceCube-2")] == [1] and store.outgoing("nope") == []
