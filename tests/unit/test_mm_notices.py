"""Notices in: every real example parses and validates; corrupted ones fail with the schema's own error.

Covers GCN unified JSON (IceCube track alerts and LVK track search, KM3NeT, Super-K, BOOM), LVK
``igwn.gwalert`` JSON and Avro (with its base64 multi-order map), and GCN Classic VOEvent 2.0
(LVK, IceCube tracks and cascades); then the notice pipeline's dead letters.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import pytest

from broker.multimessenger.lvk import json_to_avro
from broker.multimessenger.notice import NoticeError
from broker.multimessenger.parse import parse_notice

DATA = Path(__file__).resolve().parents[1] / "data" / "notices"


def _gcn(shared_data, rel: str) -> dict:
    return json.loads((shared_data / "gcn" / "notices" / rel).read_text())


def _bytes(doc: dict) -> bytes:
    return json.dumps(doc).encode()


GCN_EXAMPLES = {
    "icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json": ("IceCube-137840_57034692", "neutrino",
                                                                              "map"),
    "icecube/lvk_nu_track_search.example.json": ("IceCube-LVK-S230914ak", "neutrino", "circles"),
    "km3net/alert.example.json": ("KM3-240901A", "neutrino", "map"),
    "km3net/alert.multiplet.example.json": ("KM3-240901B", "neutrino", "map"),
    "superk/sn_alert.real.example.json": ("SN.095001.000001", "neutrino", "circle"),
    "superk/sn_alert.test.example.json": ("SN.095001.000001", "neutrino", "circle"),
    "boom/alert.example.json": ("ZTF25acffkdr", "optical", None),
}


@pytest.mark.parametrize("rel", sorted(GCN_EXAMPLES))
def test_every_gcn_example_notice_parses_and_validates(shared_data, rel):
    raw = (shared_data / "gcn" / "notices" / rel).read_bytes()
    n = parse_notice(raw, rel)
    event_id, messenger, shape = GCN_EXAMPLES[rel]
    assert (n.event_id, n.messenger) == (event_id, messenger)
    assert (n.localization.shape if n.localization else None) == shape
    assert n.schema == rel.split("/")[0] + "/" + json.loads(raw)["$schema"].rsplit("/", 1)[1]
    assert n.test == ("test.example" in rel)
    assert n.notice_id == parse_notice(raw).notice_id  # a replayed notice is the same notice


def test_the_gcn_core_examples_are_schema_pieces_not_notices(shared_data):
    """core/*.example.json validate against their component schema but name no event and no time."""
    from broker.multimessenger.schemas import validate_json

    files = sorted((shared_data / "gcn" / "notices" / "core").glob("*.example.json"))
    assert len(files) == 5
    for f in files:
        doc = json.loads(f.read_text())
        validate_json(doc, doc["$schema"])  # valid pieces ...
        with pytest.raises(NoticeError) as exc:
            parse_notice(f.read_bytes())  # ... but not notices
        assert exc.value.reason == "missing_field"


def test_neutrino_fields_are_read(shared_data):
    ic = parse_notice(_bytes(_gcn(shared_data, "icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")))
    loc = ic.localization
    assert (loc.ra, loc.dec, loc.radius, loc.containment) == (345.82, 9.01, 0.5, 0.9)
    assert loc.skymap_url.endswith(".fits.gz")
    assert ic.metadata["nu_energy"] == 127.29 and ic.metadata["p_astro"] == 0.34064 and ic.metadata["far"] == 8.029e-8
    assert ic.metadata["name"] == "IceCube-230416A" and ic.revision == 1 and ic.kind == "INITIAL"
    assert ic.event_time == "2023-04-16T05:22:26.150574Z"
    search = parse_notice(_bytes(_gcn(shared_data, "icecube/lvk_nu_track_search.example.json")))
    assert [(c.ra, c.dec, c.radius) for c in search.localization.components] == [(17.48, 16.15, 0.5),
                                                                                   (13.82, 18.66, 0.5)]
    assert search.metadata["ref_ID"] == "S230914ak"
    sk = parse_notice(_bytes(_gcn(shared_data, "superk/sn_alert.real.example.json")))
    assert sk.localization.containment == 0.68 and sk.localization.radius == 0.91


def test_event_name_and_id_as_strings_or_arrays_and_nested_localization(shared_data):
    doc = _gcn(shared_data, "icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")
    as_strings = dict(doc, event_name="IceCube-230416A", id="137840_57034692")
    assert parse_notice(_bytes(as_strings)).event_id == parse_notice(_bytes(doc)).event_id
    search = _gcn(shared_data, "icecube/lvk_nu_track_search.example.json")
    flat = copy.deepcopy(search)
    for ev in flat["coincident_events"]:
        ev.update(ev.pop("localization"))  # positions directly on the event: the other shape
    a, b = parse_notice(_bytes(search)), parse_notice(_bytes(flat))
    assert [c.to_dict() for c in a.localization.components] == [c.to_dict() for c in b.localization.components]


def test_an_ellipse_is_read_as_an_ellipse(shared_data):
    doc = _gcn(shared_data, "icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")
    doc.pop("healpix_url")
    doc["ra_dec_error"] = [0.8, 0.5, 30]
    loc = parse_notice(_bytes(doc)).localization
    assert (loc.shape, loc.a, loc.b, loc.pa) == ("ellipse", 0.8, 0.5, 30.0)


@pytest.mark.parametrize("name,kind", [("earlywarning", "EARLY_WARNING"), ("preliminary", "PRELIMINARY"),
                                       ("initial", "INITIAL"), ("update", "UPDATE"), ("retraction", "RETRACTION")])
def test_every_lvk_sample_in_json_and_avro(shared_data, name, kind):
    raw = (shared_data / "lvk" / f"MS181101ab-{name}.json").read_bytes()
    doc = json.loads(raw)
    js = parse_notice(raw, "igwn.gwalert")
    av = parse_notice(json_to_avro(doc), "igwn.gwalert")
    for n, fmt in ((js, "lvk_json"), (av, "lvk_avro")):
        assert (n.event_id, n.messenger, n.kind, n.format, n.test) == ("MS181101ab", "gw", kind, fmt, True)
        assert n.created == doc["time_created"]
    assert av.skymap == js.skymap
    if kind == "RETRACTION":
        assert js.skymap is None and js.localization is None
    else:
        assert js.skymap == base64.b64decode(doc["event"]["skymap"]) and js.skymap.startswith(b"SIMPLE")
        assert js.localization.shape == "map"
        assert "skymap" not in js.full_notice["event"]  # ANTARES's full_notice: the notice without its map
        assert js.metadata["far"] == 9.11069936486e-14 and js.metadata["classification"]["BNS"] == 0.95


def test_lvk_avro_read_with_its_writer_schema_is_checked_against_the_json_schema(shared_data):
    import fastavro

    from broker.multimessenger.schemas import lvk_avro_schema

    doc = json.loads((shared_data / "lvk" / "MS181101ab-preliminary.json").read_bytes())
    doc["event"]["skymap"] = base64.b64decode(doc["event"]["skymap"])
    doc["urls"] = {"gracedb": "not-a-uri but a string"}  # Avro accepts it; our JSON check does too (no formats)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, lvk_avro_schema(), doc)
    assert parse_notice(buf.getvalue(), "igwn.gwalert").event_id == "MS181101ab"  # bare payload on LVK's topic
    with pytest.raises(NoticeError) as exc:
        parse_notice(buf.getvalue()[:-50], "igwn.gwalert")
    assert exc.value.reason == "schema_invalid"


@pytest.mark.parametrize("name,kind,rev", [("2-Preliminary", "PRELIMINARY", 2), ("5-Retraction", "RETRACTION", 5)])
def test_lvk_voevents(shared_data, name, kind, rev):
    n = parse_notice((shared_data / "lvk" / f"MS181101ab-{name}.xml").read_bytes())
    assert (n.event_id, n.messenger, n.kind, n.revision, n.format, n.test) == ("MS181101ab", "gw", kind, rev,
                                                                                "voevent", True)
    if kind == "PRELIMINARY":
        assert n.localization.skymap_url == "https://emfollow.docs.ligo.org/userguide/_static/bayestar.multiorder.fits"
        assert n.metadata["far"] == 9.11069936486e-14 and n.metadata["instruments"] == ["H1", "L1", "V1"]
        assert n.event_time == "2018-11-01T22:22:46.654437Z"
    else:
        assert n.localization is None and len(n.supersedes) == 4


def test_icecube_voevents_tracks_and_cascades():
    track = parse_notice((DATA / "icecube_gold_track.xml").read_bytes())
    assert (track.event_id, track.kind, track.revision, track.mission) == ("IceCube-137840_57034692", "INITIAL", 0,
                                                                          "IceCube")
    assert (track.localization.shape, track.localization.radius, track.localization.containment) == ("circle", 0.5, 0.9)
    assert track.metadata["pipeline"] == "Gold Track Alert" and track.metadata["signalness"] == 0.34064
    update = parse_notice((DATA / "icecube_gold_track_update.xml").read_bytes())
    assert update.kind == "UPDATE" and update.order_key > track.order_key
    retract = parse_notice((DATA / "icecube_gold_track_retraction.xml").read_bytes())
    assert retract.retraction and retract.localization is None
    cascade = parse_notice((DATA / "icecube_cascade.xml").read_bytes())
    assert cascade.metadata["pipeline"] == "Cascade Alert" and cascade.localization.radius == 9.13


# ---- corrupted notices: the schema's own error ------------------------------------------------
def _corruptions(shared_data):
    ic = _gcn(shared_data, "icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json")
    lvk = json.loads((shared_data / "lvk" / "MS181101ab-preliminary.json").read_text())
    xml = (shared_data / "lvk" / "MS181101ab-2-Preliminary.xml").read_bytes()
    return {
        "icecube ra as text": (_bytes(dict(ic, ra="345.82")), "schema_invalid", "ra"),
        "icecube unknown pipeline": (_bytes(dict(ic, pipeline="Platinum Track Alert")), "schema_invalid", "pipeline"),
        "lvk unknown alert type": (_bytes(dict(lvk, alert_type="MAYBE")), "schema_invalid", "alert_type"),
        "lvk missing superevent": (_bytes({k: v for k, v in lvk.items() if k != "time_created"}), "schema_invalid",
                                   "time_created"),
        "lvk far as text": (_bytes(dict(lvk, event=dict(lvk["event"], far="tiny"))), "schema_invalid", "far"),
        "boom extra field": (_bytes(dict(_gcn(shared_data, "boom/alert.example.json"), surprise=1)), "schema_invalid",
                             "surprise"),
        "voevent broken structure": (xml.replace(b"<Who>", b"<Whom>").replace(b"</Who>", b"</Whom>"), "schema_invalid",
                                     "Whom"),
        "voevent entity trick": (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + xml[xml.index(b"<voe"):],
                                 "schema_invalid", "DOCTYPE"),
        "truncated json": (_bytes(ic)[:-10], "bad_json", "JSON"),
        "NaN literal": (_bytes(ic).replace(b'"ra": 345.82', b'"ra": NaN'), "bad_json", "NaN"),
        "off the sky": (_bytes(dict(ic, dec=123.0)), "implausible_localization", "off the sky"),
        "corrupt sky map": (_bytes(dict(lvk, event=dict(lvk["event"], skymap=base64.b64encode(b"not fits").decode()))),
                            "bad_skymap", "FITS"),
        "unknown schema": (_bytes(dict(ic, **{"$schema": "https://example.org/nope.json"})), "unknown_schema", "nope"),
        "binary junk": (b"\x00\x01\x02garbage", "unknown_format", "not a JSON"),
    }


def test_corrupted_notices_fail_with_the_schema_error(shared_data):
    failures = []
    for name, (raw, reason, words) in _corruptions(shared_data).items():
        try:
            parse_notice(raw)
        except NoticeError as exc:
            if exc.reason != reason or words not in str(exc):
                failures.append(f"{name}: {exc.reason}: {exc}")
            continue
        failures.append(f"{name}: accepted")
    assert failures == []


def test_oversized_notice_is_refused_before_parsing():
    with pytest.raises(NoticeError) as exc:
        parse_notice(b"{" + b" " * 5000 + b"}", max_bytes=4096)
    assert exc.value.reason == "too_large"


def test_the_notice_pipeline_dead_letters_a_corrupted_notice_and_keeps_the_others(shared_data, tmp_path):
    """Through the worker machinery: DLQ topic (original bytes, reason and schema error in headers) and the store."""
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.multimessenger.stage import NoticePipeline
    from broker.worker import Worker

    good = (shared_data / "gcn" / "notices" / "superk" / "sn_alert.real.example.json").read_bytes()
    bad = _bytes(dict(json.loads(good), processed_sample="most of it"))
    (tmp_path / "a.json").write_bytes(good)
    (tmp_path / "b.json").write_bytes(bad)
    store, index = SQLiteStore(tmp_path / "s.sqlite", 15), SQLiteIndex(tmp_path / "i.sqlite")
    sink = StreamFileSink(tmp_path / "streams")
    pipe = NoticePipeline(store, index, sink)
    summary = Worker(pipe, FileSource([tmp_path / "a.json", tmp_path / "b.json"]), batch_size=10).run()
    r = summary.result
    assert (r.messages, r.packets, r.rejected_total) == (2, 1, 1)
    assert r.rejected == {"schema_invalid": 1}
    (letter,) = store.dead_letters()
    assert letter.payload == bad and letter.reason == "schema_invalid"
    assert "processed_sample" in letter.message and "'most of it' is not one of ['partial', 'full']" in letter.message
    assert sink.read_topic("albireo.notices.dlq") == [bad]
    assert store.event("SN.095001.000001")["notices"] == 1
    assert pipe.metrics.counter("notices_rejected", reason="schema_invalid") == 1
