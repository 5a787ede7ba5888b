"""Rubin/LSST normalisation for every schema version lsst-alert-packet ships."""

from __future__ import annotations

import copy
import datetime
import math

import fastavro
import pytest

from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError, SchemaCache, encode_schemaless, write_container
from broker.ingest.registries import LsstSchemaRegistry, schema_id_for
from broker.ingest.validate import validate_packet


@pytest.fixture(scope="module")
def registry():
    return LsstSchemaRegistry()


def _raw(path):
    with open(path, "rb") as fh:
        return next(fastavro.reader(fh))


def _get(row, *names):
    return next(row[n] for n in names if n in row)


def _named_fields(parsed: dict, type_suffix: str) -> list[dict]:
    """Fields of the named record type ending in ``type_suffix`` inside a parsed schema."""
    for name, definition in parsed["__named_schemas"].items():
        if name.endswith(type_suffix):
            return definition["fields"]
    raise LookupError(type_suffix)


def _make_row(fields: list[dict], **values) -> dict:
    """A schema-valid row: given values, None for nullable fields, a plain value otherwise."""
    plain = {"long": 7, "int": 7, "float": 1.5, "double": 1.5, "string": "x", "boolean": False}
    row = {}
    for f in fields:
        if f["name"] in values:
            row[f["name"]] = values[f["name"]]
        elif isinstance(f["type"], list) and "null" in f["type"]:
            row[f["name"]] = None
        else:
            row[f["name"]] = plain[f["type"]]
    return row


def test_sample_versions_cover_v3_to_v11(lsst_samples):
    assert {"3.0", "6.1", "7.4", "8.0", "11.0"} <= set(lsst_samples)
    assert len(lsst_samples) >= 15


#: the samples whose time fields hold 1480360995.0 (Unix seconds) where their schema says MJD.
SECONDS_SAMPLES = {"3.0", "4.0", "5.0", "6.0", "6.1", "7.0", "7.1", "7.2", "7.3", "7.4"}
_TIME_FIELDS = ("midpointMjdTai", "midPointTai")


def _with_mjd_times(rec: dict, mjd: float = 60902.993305483615) -> dict:
    """A copy of a real sample whose alert times are in the schema's own unit (MJD): only they change.

    ``mjd`` defaults to the time the v8.0+ samples carry; history rows go 1, 2, ... days earlier.
    """
    rec = copy.deepcopy(rec)
    for name in _TIME_FIELDS:
        if name in rec["diaSource"]:
            rec["diaSource"][name] = mjd
    for key in ("prvDiaSources", "prvDiaForcedSources", "prvDiaNondetectionLimits"):
        for k, row in enumerate(rec.get(key) or (), start=1):
            for name in _TIME_FIELDS:
                if name in row:
                    row[name] = mjd - k
    return rec


def _container_like(path, rec) -> bytes:
    with open(path, "rb") as fh:
        schema = fastavro.reader(fh).writer_schema
    return write_container([rec], schema)


def test_every_sample_normalises_like_the_raw_record(lsst_samples):
    for version, path in lsst_samples.items():
        rec = _raw(path)
        if version in SECONDS_SAMPLES:
            with pytest.raises(DecodeError) as exc:
                decode_message(path.read_bytes(), cache=SchemaCache())
            assert exc.value.reason == "implausible_time"
            rec = _with_mjd_times(rec)
            raw = _container_like(path, rec)
        else:
            raw = path.read_bytes()
        (packet,) = decode_message(raw, cache=SchemaCache())
        src = rec["diaSource"]
        major, minor = version.split(".")
        assert packet.schema == f"lsst.v{major}_{minor}.alert"
        t = packet.trigger
        assert t.alert_id == f"lsst_diasource:{src['diaSourceId']}"
        assert t.survey == 4 and not t.is_history
        assert t.ra == src["ra"] and t.dec == _get(src, "dec", "decl")
        assert t.mjd == _get(src, "midpointMjdTai", "midPointTai")
        assert t.passband == _get(src, "band", "filterName")
        flux, err = _get(src, "psfFlux", "psFlux"), _get(src, "psfFluxErr", "psFluxErr")
        assert math.isclose(t.mag, -2.5 * math.log10(flux) + 31.4)
        assert math.isclose(t.magerr, 1.0857 * err / flux)
        # the magnitude really is AB: 3631 Jy at mag 0
        assert math.isclose(10 ** (-0.4 * t.mag) * 3631e9, flux, rel_tol=1e-3)
        expected_obj = (rec.get("diaObject") or {}).get("diaObjectId") or src.get("diaObjectId")
        assert t.object_id == str(expected_obj)
        props = t.properties
        assert props["lsst_object_id"] == str(expected_obj)
        for key, value in src.items():
            if isinstance(value, datetime.datetime):  # an Avro timestamp: kept as an MJD (checked below)
                assert isinstance(props["lsst_" + key], float)
                continue
            assert props.get("lsst_" + key) == value if value is not None else "lsst_" + key not in props
        for key, value in (rec.get("diaObject") or {}).items():
            if isinstance(value, datetime.datetime):
                assert isinstance(props["lsst_diaobject_" + key], float)
            elif value is not None and not (isinstance(value, float) and math.isnan(value)):
                assert props["lsst_diaobject_" + key] == value
        prv = rec.get("prvDiaSources") or []
        assert [h.alert_id for h in packet.history] == [f"lsst_diasource:{p['diaSourceId']}" for p in prv]
        assert all(h.is_history and h.survey == 4 for h in packet.history)
        assert [h.ra for h in packet.history] == [p["ra"] for p in prv]
        validate_packet(packet)


def test_times_follow_each_schemas_documented_unit(lsst_samples, registry):
    """Every version's alert times are MJD TAI days (its docs); timestamps become MJDs; no unit slips in."""
    from astropy.time import Time

    for version, path in lsst_samples.items():
        rec = _raw(path)
        doc_unit = _time_doc(registry, version)
        assert doc_unit is None or "Modified Julian Date" in doc_unit, (version, doc_unit)
        if version in SECONDS_SAMPLES:
            assert _get(rec["diaSource"], *_TIME_FIELDS) == 1480360995.0  # the value the issue was about
            rec = _with_mjd_times(rec)
        (packet,) = decode_message(_container_like(path, rec), cache=SchemaCache())
        assert packet.trigger.mjd == _get(rec["diaSource"], *_TIME_FIELDS)
        for h, row in zip(packet.history, rec.get("prvDiaSources") or (), strict=False):
            assert h.mjd == _get(row, *_TIME_FIELDS)
        stamp = rec["diaSource"].get("time_processed")
        if isinstance(stamp, datetime.datetime):  # v8.0: an Avro timestamp-micros
            assert packet.trigger.properties["lsst_time_processed"] == pytest.approx(Time(stamp).utc.mjd, abs=1e-9)
    # and every way a time can be in the wrong unit is refused, for the trigger and for history
    rec = _raw(lsst_samples["11.1"])
    good = rec["diaSource"]["midpointMjdTai"]
    for wrong in (good * 86400.0, good * 86400e3, good + 2400000.5, float("nan"), -1.0):
        bad = copy.deepcopy(rec)
        bad["diaSource"]["midpointMjdTai"] = wrong
        with pytest.raises(DecodeError) as exc:
            decode_message(_container_like(lsst_samples["11.1"], bad), cache=SchemaCache())
        assert exc.value.reason == "implausible_time", wrong
    bad = copy.deepcopy(rec)
    bad["prvDiaSources"][0]["midpointMjdTai"] = good * 86400.0
    with pytest.raises(DecodeError, match="history"):
        decode_message(_container_like(lsst_samples["11.1"], bad), cache=SchemaCache())


def _time_doc(registry, version: str) -> str | None:
    """The ``doc`` of the diaSource time field in the schema lsst-alert-packet ships for ``version``."""
    major, minor = (int(x) for x in version.split("."))
    for f in _named_fields(registry(schema_id_for(major, minor)), ".diaSource"):
        if f["name"] in _TIME_FIELDS:
            return f.get("doc")
    raise LookupError(version)


@pytest.mark.parametrize("version", ["3.0", "5.0", "6.0", "7.4", "9.0", "11.1"])
def test_forced_sources_and_nondetection_limits(lsst_samples, registry, version):
    rec = _with_mjd_times(_raw(lsst_samples[version]))
    major, minor = (int(x) for x in version.split("."))
    parsed = registry(schema_id_for(major, minor))
    fs_fields = _named_fields(parsed, ".diaForcedSource")
    names = {f["name"] for f in fs_fields}
    flux_name = "psfFlux" if "psfFlux" in names else "psFlux"
    time_name = "midpointMjdTai" if "midpointMjdTai" in names else "midPointTai"
    band_name = "band" if "band" in names else "filterName"
    strong = _make_row(fs_fields, diaForcedSourceId=11, **{flux_name: 5000.0, flux_name + "Err": 100.0,
                                                           time_name: 60000.5, band_name: "g"})
    weak = _make_row(fs_fields, diaForcedSourceId=12, **{flux_name: 150.0, flux_name + "Err": 100.0,
                                                         time_name: 60001.5, band_name: "i"})
    rec = copy.deepcopy(rec)
    rec["prvDiaForcedSources"] = [strong, weak]
    has_limits = "prvDiaNondetectionLimits" in {f["name"] for f in parsed["fields"]}
    if has_limits:
        nd_fields = _named_fields(parsed, ".diaNondetectionLimit")
        rec["prvDiaNondetectionLimits"] = [_make_row(nd_fields, ccdVisitId=99, diaNoise=200.0,
                                                     **{time_name: 60002.5, band_name: "r"})]
    body = encode_schemaless(rec, parsed)
    (packet,) = decode_message(body, lsst_schema_version=version, registry=registry)

    forced = {h.alert_id: h for h in packet.history if h.alert_id.startswith("lsst_diaforcedsource:")}
    assert set(forced) == {"lsst_diaforcedsource:11", "lsst_diaforcedsource:12"}
    s, w = forced["lsst_diaforcedsource:11"], forced["lsst_diaforcedsource:12"]
    assert math.isclose(s.mag, -2.5 * math.log10(5000.0) + 31.4) and s.passband == "g" and s.mjd == 60000.5
    assert w.mag is None and math.isclose(w.maglim, -2.5 * math.log10(500.0) + 31.4)  # SNR 1.5: limit only
    assert s.properties["lsst_forced_phot"] is True
    limits = [h for h in packet.history if h.alert_id.startswith("lsst_nondetection:")]
    if has_limits:
        (lim,) = limits
        assert lim.alert_id == f"lsst_nondetection:{packet.trigger.object_id}-99"
        assert lim.mag is None and math.isclose(lim.maglim, -2.5 * math.log10(1000.0) + 31.4)
        assert math.isnan(lim.ra)
    else:
        assert limits == []


def test_solar_system_source_uses_ss_object_id(lsst_samples, registry):
    rec = copy.deepcopy(_raw(lsst_samples["9.0"]))
    rec["diaObject"] = None
    rec["diaSource"]["diaObjectId"] = None
    rec["diaSource"]["ssObjectId"] = 4242
    rec["diaSource"]["psfFlux"] = -800.0  # a negative difference flux still gets |flux| magnitude
    (packet,) = decode_message(encode_schemaless(rec, registry(900)), lsst_schema_version="9.0", registry=registry)
    assert packet.trigger.object_id == "4242"
    assert math.isclose(packet.trigger.mag, -2.5 * math.log10(800.0) + 31.4)
    assert packet.trigger.properties["lsst_psfFlux"] == -800.0


def test_cutouts_are_kept(lsst_samples, registry):
    rec = _with_mjd_times(_raw(lsst_samples["7.4"]))
    rec["cutoutDifference"] = b"\x1f\x8bdiff"
    rec["cutoutTemplate"] = b"tmpl"
    (packet,) = decode_message(encode_schemaless(rec, registry(704)), lsst_schema_version="7.4", registry=registry)
    assert packet.cutouts == {"difference": b"\x1f\x8bdiff", "template": b"tmpl"}


def test_unknown_lsst_version_in_container_is_read_by_its_fields(lsst_samples):
    """A container embeds its writer schema, so a version lsst-alert-packet does not ship yet is still
    read: by its fields (the survey is recognised by structure, the name is a hint)."""
    rec = _raw(lsst_samples["11.1"])
    with open(lsst_samples["11.1"], "rb") as fh:
        schema = fastavro.reader(fh).writer_schema
    (want,) = decode_message(lsst_samples["11.1"].read_bytes(), cache=SchemaCache())
    schema = {**schema, "name": "lsst.v99_0.alert"}
    (packet,) = decode_message(write_container([rec], schema), cache=SchemaCache())
    assert packet.schema == "lsst.v99_0.alert"
    assert packet.trigger.alert_id == want.trigger.alert_id and packet.trigger.properties == want.trigger.properties
