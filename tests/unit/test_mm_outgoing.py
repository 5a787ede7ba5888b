"""Outgoing alerts: GCN JSON notices valid against the unified schemas, VOEvent 2.0, the circular.

On the embedded stack (SQLite store and index, stream files): the notice pipeline tags loci around
an IceCube track, then :class:`AlertPublisher` issues revision 1 (an IceCube-style neutrino notice
and a BOOM-style optical notice whose targets are exactly the tagged loci), nothing new on a
second call, revision 2 after the update (citing revision 1), and a retraction as revision 3.
The circular of a fixed event is compared with a golden file reviewed by eye.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import pytest

from broker.multimessenger.notice import NoticeError
from broker.multimessenger.outgoing.build import NEUTRINO_SCHEMA, OPTICAL_SCHEMA, build_revision
from broker.multimessenger.outgoing.candidates import Candidate, Photometry
from broker.multimessenger.outgoing.publish import AlertPublisher, AlertTopics
from broker.multimessenger.schemas import validate_json
from tests.unit.test_mm_revisions import DATA, _msg, _tagged, locus_factory_unit, mm  # noqa: F401, F811 - fixtures

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "mm_circular.golden.txt"
EVENT = "IceCube-137840_57034692"
T = datetime.datetime(2023, 4, 17, 6, 0, tzinfo=datetime.UTC)


def _check_voevent(xml: str):
    import voeventparse as vp

    v = vp.loads(xml.encode())
    assert vp.valid_as_v2_0(v)
    return v


def test_revisions_of_a_neutrino_event_on_the_embedded_stack(mm):  # noqa: F811 - the fixture
    pipe, store, sink, loci = mm
    pub = AlertPublisher(store, pipe.index, sink, AlertTopics("albireo.alerts."))
    pipe.process([_msg(DATA / "icecube_gold_track.xml")])
    tagged = _tagged(store)
    rec, new = pub.issue(EVENT, now=T)
    assert new and rec["record_number"] == 1 and rec["alert_type"] == "initial"
    nu, opt = rec["neutrino"], rec["optical"]
    validate_json(nu, NEUTRINO_SCHEMA)
    validate_json(opt, OPTICAL_SCHEMA)
    assert nu["record_number"] == 1 and nu["ra"] == pytest.approx(345.82) and nu["ra_dec_error"] == 0.5
    assert {t["event_name"] for t in opt["data"]["targets"]} == tagged
    assert all(t["gcn_crossmatch"][0]["ref_ID"] == EVENT for t in opt["data"]["targets"])
    assert {p["event_name"] for p in opt["data"]["photometry"]} == tagged
    v = _check_voevent(rec["voevent"])
    assert v.attrib["ivorn"].endswith(f"{EVENT}-1")
    assert "Candidate" in rec["circular"] and all(lid in rec["circular"] for lid in tagged)
    # nothing changed: no new revision, nothing published
    again, new = pub.issue(EVENT, now=T + datetime.timedelta(hours=1))
    assert not new and again["record_number"] == 1
    assert len(sink.read_topic("albireo.alerts.neutrino")) == 1
    # the update moves the circle: revision 2, citing 1
    pipe.process([_msg(DATA / "icecube_gold_track_update.xml")])
    rec2, new = pub.issue(EVENT, now=T + datetime.timedelta(hours=2))
    assert new and rec2["record_number"] == 2 and rec2["alert_type"] == "update"
    assert rec2["neutrino"]["ra_dec_error"] == 0.42
    assert {t["event_name"] for t in rec2["optical"]["data"]["targets"]} == _tagged(store)
    v2 = _check_voevent(rec2["voevent"])
    assert v2.Citations.EventIVORN.attrib["cite"] == "supersedes"
    assert str(v2.Citations.EventIVORN).endswith(f"{EVENT}-1")
    # the retraction: revision 3, a retraction notice with no targets
    pipe.process([_msg(DATA / "icecube_gold_track_retraction.xml")])
    rec3, new = pub.issue(EVENT, now=T + datetime.timedelta(hours=3))
    assert new and rec3["record_number"] == 3 and rec3["alert_type"] == "retraction"
    validate_json(rec3["neutrino"], NEUTRINO_SCHEMA)
    validate_json(rec3["optical"], OPTICAL_SCHEMA)
    assert rec3["neutrino"]["alert_type"] == "retraction" and "ra" not in rec3["neutrino"]
    assert rec3["optical"]["data"]["targets"] == []
    assert _check_voevent(rec3["voevent"]).Citations.EventIVORN.attrib["cite"] == "retraction"
    assert "retraction" in rec3["circular"].splitlines()[2]
    # stored, numbered, never rewritten; published on every topic, one message per revision
    assert [r["record_number"] for r in store.outgoing(EVENT)] == [1, 2, 3]
    assert store.outgoing(EVENT)[0]["neutrino"]["ra_dec_error"] == 0.5
    for kind in ("neutrino", "optical", "voevent", "circular"):
        assert len(sink.read_topic(f"albireo.alerts.{kind}")) == 3
    bodies = [json.loads(b) for b in sink.read_topic("albireo.alerts.neutrino")]
    assert [b["record_number"] for b in bodies] == [1, 2, 3]


def test_a_gw_event_gets_an_optical_notice_and_no_neutrino_notice():
    ev = dict(_event(), messenger="gw", event_id="S230417ab", name="S230417ab", mission="LVK",
              localization={"shape": "map"}, summary={"shape": "multiordermap", "center": [10.0, -20.0],
                                                      "areas": {"50": 40.0, "90": 180.5}})
    rec = build_revision(ev, _candidates(), 1, "2023-04-17T06:00:00Z")
    assert rec["neutrino"] is None
    assert rec["optical"]["data"]["targets"][0]["gcn_crossmatch"][0]["ref_type"] == "GW"
    assert "90% credible area 180.50 sq. deg." in " ".join(rec["circular"].split())  # wrapped at 80
    _check_voevent(rec["voevent"])


def test_the_schemas_reject_a_broken_notice():
    rec = build_revision(_event(), _candidates(), 1, "2023-04-17T06:00:00Z")
    bad = copy.deepcopy(rec["neutrino"])
    bad["alert_type"] = "final"  # not in the unified schema's enum
    with pytest.raises(NoticeError, match="alert_type"):
        validate_json(bad, NEUTRINO_SCHEMA)
    bad = copy.deepcopy(rec["optical"])
    bad["data"]["targets"][0]["ra"] = "345.8"
    with pytest.raises(NoticeError, match="ra"):
        validate_json(bad, OPTICAL_SCHEMA)


def _event() -> dict:
    return {"event_id": EVENT, "name": "IceCube-230416A", "messenger": "neutrino", "mission": "IceCube",
            "status": "active", "test": False, "event_time": "2023-04-16T05:22:26.150574Z",
            "created": "2023-04-16T05:42:00Z",
            "metadata": {"far": 8.029e-8, "p_astro": 0.34064, "nu_energy": 127.29, "pipeline": "Bronze Track Alert",
                         "alert_topology": "Track"},
            "localization": {"shape": "circle", "ra": 345.82, "dec": 9.01, "radius": 0.5, "containment": 0.9,
                             "systematic_included": False},
            "summary": {"shape": "circle", "center": [345.82, 9.01], "areas": {"50": 0.2411, "90": 0.7854}}}


def _candidates() -> list[Candidate]:
    return [Candidate("ALB23abcdefghij", 345.71234, 9.10342, 41.2, 0.3310, 60050.4, ["in_neutrino_90"],
                      [Photometry("2023-04-16T09:10:00Z", "ZTF", "g", 19.21, 0.08, 20.4),
                       Photometry("2023-04-17T04:00:00Z", "ZTF", "r", 19.05, 0.06, 20.6)]),
            Candidate("ALB23klmnopqrst", 345.99001, 8.82113, 77.9, 0.6200, 60050.6, ["in_neutrino_90"],
                      [Photometry("2023-04-16T10:00:00Z", "ZTF", "r", None, None, 20.1)])]


def test_the_circular_matches_the_golden_file():
    rec = build_revision(_event(), _candidates(), 2, "2023-04-17T06:00:00Z")
    assert rec["circular"] == GOLDEN.read_text()
    assert max(len(line) for line in rec["circular"].splitlines()) <= 80


def test_the_assembled_notice_worker_issues_alerts_as_notices_arrive(tmp_path, locus_factory_unit):  # noqa: F811
    """`albireo notices ingest` (the embedded notice worker from ``broker.assemble``) issues and publishes them."""
    import numpy as np

    from broker.adapters.streams.files import iter_stream_file
    from broker.assemble import embedded_notice_worker, open_index, open_index_writer, open_store
    from broker.config import load_config
    from broker.multimessenger.notice import to_mjd
    from broker.multimessenger.parse import parse_notice

    cfg = load_config(env={})
    cfg.store.path, cfg.search.path = str(tmp_path / "s.sqlite"), str(tmp_path / "i.sqlite")
    cfg.search.outbox_path = str(tmp_path / "o.sqlite")
    t0 = to_mjd(parse_notice((DATA / "icecube_gold_track.xml").read_bytes()).created_dt)
    rng = np.random.default_rng(5)
    loci = [locus_factory_unit(345.82 + float(dx), 9.01 + float(dy), n=2, mjd0=t0 - 0.5, seed=i)
            for i, (dx, dy) in enumerate(rng.uniform(-0.6, 0.6, (40, 2)))]
    store, index = open_store(cfg), open_index(cfg)
    store.save_batch(loci, [a for x in loci for a in x.alerts])
    writer = open_index_writer(cfg, index)
    writer.write(loci)
    assert writer.close()
    store.close()
    index.close()
    out = tmp_path / "streams"
    for name in ("icecube_gold_track.xml", "icecube_gold_track_retraction.xml"):
        with embedded_notice_worker(cfg, [DATA / name], out) as a:
            a.worker.run()
    store = open_store(cfg, create=False)
    try:
        revs = store.outgoing(EVENT)
        tagged_first = {t["event_name"] for t in revs[0]["optical"]["data"]["targets"]}
    finally:
        store.close()
    assert [r["alert_type"] for r in revs] == ["initial", "retraction"]
    assert 0 < len(tagged_first) < len(loci)
    nu = [json.loads(b) for b in iter_stream_file(out / "albireo.alerts.neutrino.avro-stream")]
    assert [(b["record_number"], b["alert_type"]) for b in nu] == [(1, "initial"), (2, "retraction")]
    assert len(list(iter_stream_file(out / "albireo.alerts.circular.avro-stream"))) == 2


def test_a_hostile_event_name_cannot_forge_circular_lines():
    ev = dict(_event(), name="IceCube-1\nSUBJECT: forged\r\nFROM: someone else")
    lines = build_revision(ev, _candidates(), 1, "2023-04-17T06:00:00Z")["circular"].splitlines()
    assert sum(ln.startswith("SUBJECT:") for ln in lines) == 1 and sum(ln.startswith("FROM:") for ln in lines) == 1
    assert lines[2].startswith("SUBJECT: IceCube-1 SUBJECT: forged")  # kept, on its one line
