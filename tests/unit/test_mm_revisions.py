"""Revisions: an update supersedes what it updates, stale notices change nothing, a retraction withdraws.

First the pure rule (:func:`broker.multimessenger.revisions.apply`) on LVK's real sample sequence,
then the notice pipeline on stored loci: an IceCube track (VOEvent) whose update moves its circle
moves the tags with it, and its retraction removes them — and the JSON form of the same event
joins the same record.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from broker.multimessenger import revisions
from broker.multimessenger.localization import Circle
from broker.multimessenger.notice import to_mjd
from broker.multimessenger.parse import parse_notice

DATA = Path(__file__).resolve().parents[1] / "data" / "notices"
ORDER = ["earlywarning", "preliminary", "initial", "update", "retraction"]


def _lvk(shared_data, name):
    return parse_notice((shared_data / "lvk" / f"MS181101ab-{name}.json").read_bytes())


def test_lvk_sequence_in_any_arrival_order_ends_in_the_same_state(shared_data):
    notices = [_lvk(shared_data, n) for n in ORDER]
    finals = []
    for seed in range(6):
        order = notices[:]
        random.Random(seed).shuffle(order)
        ev = None
        for n in order:
            ev, _ = revisions.apply(ev, n, window_days=(1, 14), now=0.0)
        finals.append((ev["status"], ev["current_kind"], ev["localization"], ev["notices"]))
    assert set(finals) == {("retracted", "RETRACTION", None, 5)}


def test_update_supersedes_and_stale_changes_nothing(shared_data):
    ew, pre, ini, upd = (_lvk(shared_data, n) for n in ORDER[:4])
    ev, change = revisions.apply(None, pre, window_days=(1, 14), now=0.0)
    assert change == revisions.NEW and ev["localization_notice_id"] == pre.notice_id
    same, change = revisions.apply(ev, pre, window_days=(1, 14), now=0.0)  # a replay
    assert change == revisions.STALE and same["current_notice_id"] == pre.notice_id
    older, change = revisions.apply(ev, ew, window_days=(1, 14), now=0.0)  # arrives late
    assert change == revisions.STALE and older["localization_notice_id"] == pre.notice_id
    ev2, change = revisions.apply(ev, upd, window_days=(1, 14), now=0.0)
    assert change == revisions.SUPERSEDED and ev2["current_kind"] == "UPDATE"
    assert revisions.localization_changed(ev, ev2) and ev2["localization_notice_id"] == upd.notice_id
    # INITIAL and UPDATE share a second: the kind orders them, so INITIAL after UPDATE is stale
    ev3, change = revisions.apply(ev2, ini, window_days=(1, 14), now=0.0)
    assert change == revisions.STALE and ev3["current_kind"] == "UPDATE"


def test_an_update_without_a_map_keeps_the_earlier_map(shared_data):
    pre = _lvk(shared_data, "preliminary")
    doc = json.loads((shared_data / "lvk" / "MS181101ab-update.json").read_text())
    doc["event"]["skymap"] = None
    upd = parse_notice(json.dumps(doc).encode())
    ev, _ = revisions.apply(None, pre, window_days=(1, 14))
    ev2, change = revisions.apply(ev, upd, window_days=(1, 14))
    assert change == revisions.SUPERSEDED and ev2["localization_notice_id"] == pre.notice_id
    assert not revisions.localization_changed(ev, ev2)


def test_nothing_revives_a_retracted_event(shared_data):
    ev, _ = revisions.apply(None, _lvk(shared_data, "retraction"), window_days=(1, 14))
    assert ev["status"] == "retracted"
    later = json.loads((shared_data / "lvk" / "MS181101ab-update.json").read_text())
    later["time_created"] = "2018-11-02T10:00:00Z"
    ev2, change = revisions.apply(ev, parse_notice(json.dumps(later).encode()), window_days=(1, 14))
    assert change == revisions.STALE and ev2["status"] == "retracted" and ev2["localization"] is None


# ---- the notice pipeline moves tags with the localization -----------------------------------------
@pytest.fixture
def locus_factory_unit():
    from tests.contract.conftest import make_locus

    return make_locus


@pytest.fixture
def mm(tmp_path, locus_factory_unit):
    from broker.adapters.outbox import OutboxIndexWriter
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import StreamFileSink
    from broker.multimessenger.coincidence import Settings
    from broker.multimessenger.stage import NoticePipeline, NoticeSettings

    store, index = SQLiteStore(tmp_path / "s.sqlite", 15), SQLiteIndex(tmp_path / "i.sqlite")
    writer = OutboxIndexWriter(index, tmp_path / "o.sqlite", background=False)
    sink = StreamFileSink(tmp_path / "streams")
    pipe = NoticePipeline(store, index, sink, index_writer=writer, settings=NoticeSettings(coincidence=Settings()))
    # loci around the track's two positions, with detections a day after the event
    t0 = to_mjd(parse_notice((DATA / "icecube_gold_track.xml").read_bytes()).created_dt)
    rng = np.random.default_rng(3)
    ra, dec = 345.8 + rng.uniform(-0.9, 0.9, 120), 9.0 + rng.uniform(-0.9, 0.9, 120)
    loci = [locus_factory_unit(float(r), float(d), n=3, mjd0=t0 - 1.5, seed=i) for i, (r, d) in
            enumerate(zip(ra, dec, strict=True))]
    store.save_batch(loci, [a for x in loci for a in x.alerts])
    writer.write(loci)
    yield pipe, store, sink, loci
    writer.close()
    store.close()
    index.close()


def _msg(path: Path):
    from broker.ports import Message

    return Message(path.read_bytes(), str(path))


def _expected(loci, circle: Circle, t0: float) -> set[str]:
    out = set()
    for x in loci:
        det = [a for a in x.alerts if np.isfinite(a.ra) and t0 - 1 <= a.mjd <= t0 + 14]
        if det and np.any(circle.containment([a.ra for a in det], [a.dec for a in det])[0] <= 90):
            out.add(x.locus_id)
    return out


def _tagged(store, tag="in_neutrino_90") -> set[str]:
    return {x.locus_id for b in store.iter_loci() for x in b if tag in x.user_tags}


def test_an_update_moves_the_tags_and_the_retraction_removes_them(mm, shared_data):
    pipe, store, sink, loci = mm
    first = parse_notice((DATA / "icecube_gold_track.xml").read_bytes())
    upd = parse_notice((DATA / "icecube_gold_track_update.xml").read_bytes())
    t0 = first.event_mjd
    r = pipe.process([_msg(DATA / "icecube_gold_track.xml")])
    want1 = _expected(loci, Circle(345.82, 9.01, 0.5), t0)
    assert 5 < len(want1) < len(loci) and _tagged(store) == want1 and r.loci_updated == len(want1)
    r = pipe.process([_msg(DATA / "icecube_gold_track_update.xml")])
    want2 = _expected(loci, Circle(upd.localization.ra, upd.localization.dec, 0.42), t0)
    assert want2 != want1 and _tagged(store) == want2
    assert r.loci_updated == len(want1 | want2)  # every locus that lost, gained or changed level
    ev = store.event("IceCube-137840_57034692")
    assert ev["current_kind"] == "UPDATE" and ev["localization"]["radius"] == 0.42
    # the JSON form of the same event (GCN's example) joins the record: it is an older revision (stale)
    pipe.process([_msg(shared_data / "gcn" / "notices" / "icecube"
                       / "single_neutrino_alerts.gold_bronze_track_alerts.example.json")])
    assert store.event("IceCube-137840_57034692")["notices"] == 3 and _tagged(store) == want2
    pipe.process([_msg(DATA / "icecube_gold_track_retraction.xml")])
    assert _tagged(store) == set() and store.event("IceCube-137840_57034692")["status"] == "retracted"
    assert all(not x.neutrino_events and not x.alert_neutrino_events for b in store.iter_loci() for x in b)
    from broker.emit import decode_locus_message

    msgs = [decode_locus_message(m) for m in sink.read_topic("albireo.loci.in_neutrino_90")]
    untags = [m["locus_id"] for m in msgs if m["properties"]["mm_action"] == "untag"]
    assert set(untags) == want1 | want2  # lost on the update, or on the retraction: each said so
    reasons = {m["properties"]["mm_reason"] for m in msgs if m["properties"]["mm_action"] == "untag"}
    assert reasons == ({"superseded", "retraction"} if want1 - want2 else {"retraction"})
