"""ZTF normalisation, checked against the raw packets read independently with fastavro.reader."""

from __future__ import annotations

import importlib.util
import io
import math
from importlib import metadata

import fastavro
import pytest

from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError, SchemaCache

FID_TO_BAND = {1: "g", 2: "R", 3: "i"}  # as ANTARES spells them (checked below against its loci)


def _ztf_files(shared_data):
    return sorted((shared_data / "ztf").glob("*/*.avro"))


def _raw_record(path):
    with open(path, "rb") as fh:
        return next(fastavro.reader(fh))


def _close(a, b):
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-9))


def test_all_versions_present(shared_data):
    versions = set()
    for path in _ztf_files(shared_data):
        if path.name == "87704463155002.avro":
            continue
        versions.add(_raw_record(path).get("schemavsn"))
    assert {None, "2.0", "3.0", "3.1", "3.2", "3.5"} <= versions


def test_every_shared_packet_normalises_like_the_raw_record(shared_data):
    checked = 0
    for path in _ztf_files(shared_data):
        if path.name == "87704463155002.avro":
            with pytest.raises(DecodeError):
                decode_message(path.read_bytes())
            continue
        rec = _raw_record(path)
        (packet,) = decode_message(path.read_bytes(), cache=SchemaCache())
        cand = rec["candidate"]
        object_id = rec.get("objectId") or str(rec.get("alertId"))
        t = packet.trigger
        assert packet.schema == "ztf.alert"
        assert t.alert_id == f"ztf_candidate:{cand['candid']}"
        assert (t.survey, t.is_history, t.object_id) == (1, False, object_id)
        assert t.ra == cand["ra"] and t.dec == cand["dec"]
        assert _close(t.mjd, cand["jd"] - 2400000.5)
        assert t.passband == FID_TO_BAND[cand["fid"]]
        assert (t.mag, t.magerr, t.maglim) == (cand["magpsf"], cand["sigmapsf"], cand["diffmaglim"])
        props = t.properties
        assert props["ztf_object_id"] == object_id
        for key, value in cand.items():
            if value is None:
                assert "ztf_" + key not in props
            elif not (isinstance(value, float) and math.isnan(value)):
                assert props["ztf_" + key] == value, (path.name, key)
        assert props["ant_mag"] == cand["magpsf"] and props["ant_survey"] == 1

        prv = rec.get("prv_candidates") or []
        prv = [p for p in prv if p.get("candid") is None or p["candid"] != cand["candid"]]  # pre-1.0: see below
        detections = [p for p in prv if p.get("candid") is not None]
        limits = [p for p in prv if "candid" in p and p["candid"] is None]
        forced = [p for p in prv if "candid" not in p]
        assert len(packet.history) == len(prv)
        hist_det = [h for h in packet.history if h.alert_id.startswith("ztf_candidate:")]
        hist_ul = [h for h in packet.history if h.alert_id.startswith("ztf_upper_limit:")]
        hist_fp = [h for h in packet.history if h.alert_id.startswith("ztf_fp:")]
        assert (len(hist_det), len(hist_ul), len(hist_fp)) == (len(detections), len(limits), len(forced))
        for raw_row, alert in zip(detections, hist_det, strict=True):
            assert alert.alert_id == f"ztf_candidate:{raw_row['candid']}"
            assert (alert.ra, alert.dec, alert.mag, alert.survey) == (
                raw_row["ra"], raw_row["dec"], raw_row["magpsf"], 1)
            assert alert.is_history
        for raw_row, alert in zip(limits, hist_ul, strict=True):
            assert alert.alert_id == f"ztf_upper_limit:{object_id}-{raw_row['pid']}"
            assert alert.survey == 2 and alert.mag is None and alert.maglim == raw_row["diffmaglim"]
            assert math.isnan(alert.ra) and math.isnan(alert.dec)
            assert alert.passband == FID_TO_BAND[raw_row["fid"]]
            assert _close(alert.mjd, raw_row["jd"] - 2400000.5)
        for field, name in (("cutoutScience", "science"), ("cutoutTemplate", "template"),
                            ("cutoutDifference", "difference")):
            assert packet.cutouts[name] == rec[field]["stampData"]
        checked += 1
    assert checked >= 52


def test_upper_limit_counts_on_known_packets(shared_data):
    cases = {"ztf-avro-alert/472263571115095000.avro": (62, 11, 0),
             "ztf-avro-alert/87704463155000.avro": (0, 17, 0),  # its one prv detection is the trigger
             "ztf-avro-alert/forcedphot_test_1660293514215020000.avro": (0, 0, 18),
             "fink-datasim/697252845715010000.avro": (1, 23, 0)}
    for name, (n_det, n_ul, n_fp) in cases.items():
        (packet,) = decode_message((shared_data / "ztf" / name).read_bytes())
        got = [sum(h.alert_id.startswith(p) for h in packet.history)
               for p in ("ztf_candidate:", "ztf_upper_limit:", "ztf_fp:")]
        assert got == [n_det, n_ul, n_fp], name


def test_pre_1_0_packets_do_not_store_their_trigger_as_history(shared_data, tmp_path):
    """Pre-1.0 packets repeat the trigger as the last prv_candidates row: it stays the trigger, once."""
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.assemble import build_pipeline
    from broker.association import Associator
    from broker.config import load_config

    repeating = []
    for path in _ztf_files(shared_data):
        if path.name == "87704463155002.avro":
            continue
        rec = _raw_record(path)
        cand = rec["candidate"]
        if any(p.get("candid") == cand["candid"] for p in rec.get("prv_candidates") or ()):
            repeating.append((path, f"ztf_candidate:{cand['candid']}"))
    assert len(repeating) >= 4  # 87704463155000/1 and 1726958725155000/1/2
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / "s.sqlite", assoc.order)
    pipe = build_pipeline(cfg, store, StreamFileSink(tmp_path / "out"), associator=assoc)
    pipe.process(FileSource([p for p, _ in repeating]).poll_batch(100, 0))
    for path, trigger_id in repeating:
        (packet,) = decode_message(path.read_bytes())
        assert trigger_id not in {h.alert_id for h in packet.history}, path.name
        (row,) = [a for lid in [store.load_loci([x.locus_id for b in store.iter_loci() for x in b])]
                  for x in lid.values() for a in x.alerts if a.alert_id == trigger_id]
        assert row.is_history is False, path.name


def test_forced_photometry_points(shared_data):
    path = shared_data / "ztf" / "ztf-avro-alert" / "forcedphot_test_1660293514215020000.avro"
    rec = _raw_record(path)
    (packet,) = decode_message(path.read_bytes())
    fp = [h for h in packet.history if h.alert_id.startswith("ztf_fp:")]
    assert len(fp) == len(rec["prv_candidates"]) == 18
    n_measured = 0
    for raw_row, alert in zip(rec["prv_candidates"], fp, strict=True):
        assert alert.alert_id == f"ztf_fp:{rec['objectId']}-{raw_row['pid']}"
        assert alert.properties["ztf_forced_phot"] is True
        assert alert.properties["ztf_forcediffimflux"] == raw_row["forcediffimflux"]
        snr = raw_row["forcediffimflux"] / raw_row["forcediffimfluxunc"]
        if raw_row["forcediffimflux"] > 0 and snr >= 3:
            n_measured += 1
            assert alert.survey == 1
            assert math.isclose(10 ** (-0.4 * (alert.mag - raw_row["magzpsci"])), raw_row["forcediffimflux"],
                                rel_tol=1e-9)
        else:
            assert alert.mag is None and alert.survey == 2 and alert.maglim == raw_row["diffmaglim"]
    assert 0 < n_measured < len(fp)


def _devkit_locus(name: str) -> dict:
    """Load one of the real ANTARES loci antares-devkit ships as test/data/<name>.py."""
    files = metadata.files("antares-devkit") or []
    path = next(f for f in files if str(f).endswith(f"test/data/{name}.py")).locate()
    spec = importlib.util.spec_from_file_location(f"_devkit_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.d


def test_id_and_passband_conventions_match_antares_loci():
    locus = _devkit_locus("large_locus")
    ul = [a for a in locus["alerts"] if a["properties"].get("ant_survey") == 2]
    det = [a for a in locus["alerts"] if a["properties"].get("ant_survey") == 1]
    assert len(ul) > 100 and len(det) > 1000
    for a in det + ul:
        props = a["properties"]
        assert props["ant_passband"] == FID_TO_BAND[props["ztf_fid"]]
    for a in det:
        assert a["id"] == f"ztf_candidate:{a['properties']['ztf_candid']}"
    for a in ul:
        prefix, rest = a["id"].split(":", 1)
        object_id, pid = rest.rsplit("-", 1)
        assert prefix == "ztf_upper_limit" and object_id.startswith("ZTF") and int(pid) == a["properties"]["ztf_pid"]
        assert "ztf_candid" not in a["properties"]  # ANTARES drops null fields, as we do


def test_missing_fields_never_crash(shared_data):
    path = shared_data / "ztf" / "ztf-avro-alert" / "472263571115095000.avro"
    reader = fastavro.reader(io.BytesIO(path.read_bytes()))
    rec = next(reader)
    del rec["objectId"], rec["cutoutScience"]
    rec["prv_candidates"] = None
    rec["candidate"] = {k: v for k, v in rec["candidate"].items() if k not in ("magpsf", "sigmapsf", "rb")}
    from broker.ingest.surveys.ztf import normalize_ztf

    packet = normalize_ztf(rec, "ztf.alert")
    assert packet.trigger.mag is None and packet.history == [] and "science" not in packet.cutouts
    assert "ztf_rb" not in packet.trigger.properties
