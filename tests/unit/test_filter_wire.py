"""The locus a filter child decodes is the locus the worker sent, and its alerts stay packed until read."""

from __future__ import annotations

import datetime
import math

import numpy as np

from broker.filtering import wire
from broker.ingest.decode import decode_message
from broker.locus import Locus


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _real_loci(shared_data, lsst_samples) -> list[Locus]:
    from broker.ingest.framing import DecodeError

    out = []
    for path in [*sorted((shared_data / "ztf").rglob("*.avro"))[:15], *lsst_samples.values()]:
        try:
            packets = decode_message(path.read_bytes())
        except DecodeError:
            continue
        for p in packets:
            x = Locus(f"L{len(out)}", p.trigger.ra, p.trigger.dec)
            x.add_alerts(p.alerts)
            out.append(x)
    return out


def _roundtrip(x: Locus) -> Locus:
    return wire.decode_locus(wire.decode_trusted(wire.pack({"s": wire.encode_locus_static(x)})[4:])["s"],
                             wire.encode_locus_dynamic(x))


def test_real_loci_arrive_with_every_alert_value(shared_data, lsst_samples):
    loci = _real_loci(shared_data, lsst_samples)
    assert len(loci) > 10 and sum(len(x.alerts) for x in loci) > 300
    for x in loci:
        got = _roundtrip(x)
        assert [a.alert_id for a in got.alerts] == [a.alert_id for a in x.alerts]
        for mine, theirs in zip(x.alerts, got.alerts, strict=True):
            assert _same(theirs.properties, mine.properties), mine.alert_id
            assert (theirs.mjd, theirs.passband, theirs.is_history) == (mine.mjd, mine.passband, mine.is_history)
        assert got.alert.alert_id == x.alert.alert_id


def test_an_alerts_values_are_unpacked_only_when_its_properties_are_read(shared_data, lsst_samples):
    x = max(_real_loci(shared_data, lsst_samples), key=lambda x: len(x.alerts))
    got = _roundtrip(x)
    slot = wire._PROPERTIES_SLOT

    def built(a) -> bool:
        try:
            slot.__get__(a, type(a))
        except AttributeError:
            return False
        return True

    assert not any(built(a) for a in got.alerts)
    assert all(isinstance(a._values, bytes) for a in got.alerts)  # still packed: nothing was unpacked yet
    assert got.alert.properties["ant_mjd"] == x.alert.properties["ant_mjd"]
    assert [built(a) for a in got.alerts].count(True) == 1  # only the alert that was read
    got.alerts[0].properties["mine"] = 1  # an ordinary dict once built
    assert got.alerts[0].properties["mine"] == 1


def test_values_of_every_kind_survive_the_lazy_unpacking():
    from broker.alert import SURVEY_ZTF_DETECTION, Alert

    when = datetime.datetime(2026, 12, 4, 5, 6, 7, tzinfo=datetime.UTC)
    props = {"ztf_nan": math.nan, "ztf_inf": -math.inf, "ztf_none": None, "ztf_np": np.float32(1.5),
             "ztf_int": np.int64(7), "ztf_when": when, "ztf_set": {"a", "b"}, "ztf_bytes": b"\x00\x01",
             "ztf_list": [1, 2.5, "x"], "ztf_str": "null"}
    a = Alert("ztf_candidate:1", SURVEY_ZTF_DETECTION, 60000.0, 1.0, 2.0, "g", 18.0, 0.1, 20.0, dict(props),
              object_id="ZTF1")
    x = Locus("L", 1.0, 2.0)
    x.add_alerts([a])
    p = _roundtrip(x).alerts[0].properties
    assert math.isnan(p["ztf_nan"]) and p["ztf_inf"] == -math.inf and p["ztf_none"] is None
    assert p["ztf_np"] == 1.5 and p["ztf_int"] == 7 and p["ztf_when"] == when and p["ztf_set"] == {"a", "b"}
    assert p["ztf_bytes"] == b"\x00\x01" and p["ztf_list"] == [1, 2.5, "x"] and p["ztf_str"] == "null"
