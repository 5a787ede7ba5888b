"""Stored JSON: the fast paths (orjson) must read back exactly what Python's json would have."""

from __future__ import annotations

import datetime
import json
import math

import numpy as np
import pytest

from broker.jsonutil import dumps, dumps_flat, loads


@pytest.mark.parametrize("record", [
    {"ztf_magpsf": 18.25, "ztf_fid": 2, "ztf_isdiffpos": "t", "ztf_drb": None, "ztf_flag": True},
    {"ztf_ssnamenr": "null", "ztf_ssdistnr": -999.0, "null": None},  # ZTF's own "null" string
    {"name": "Ångström — 東京", "ra": 1e-300, "dec": -89.999999999999, "n": 2**63 - 1, "z": -0.0},
    {},
])
def test_flat_records_read_back_as_json_would(record):
    text = dumps_flat(record)
    assert loads(text) == json.loads(dumps(record))
    assert [type(v) for v in loads(text).values()] == [type(v) for v in record.values()]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("beside", [{}, {"ztf_ssnamenr": "null"}, {"s": 'x"null'}, {"ztf_drb": None}])
def test_nan_and_infinity_are_kept_not_turned_into_null(bad, beside):
    back = loads(dumps_flat({"ztf_magpsf": 18.0, **beside, "ztf_sigmagap": bad}))
    assert back["ztf_magpsf"] == 18.0 and {k: back[k] for k in beside} == beside
    got = back["ztf_sigmagap"]
    assert got is not None and (math.isnan(got) if math.isnan(bad) else got == bad)


def test_the_fast_path_is_taken_for_real_shaped_records():
    """The speed is the point: a flat record of finite values, None and "null" strings is orjson's text."""
    import orjson

    record = {"ztf_ssnamenr": "null", "ztf_drb": None, "ztf_magpsf": 18.5, "name": "東京"}
    assert dumps_flat(record) == orjson.dumps(record).decode() != dumps(record)


@pytest.mark.parametrize("record", [
    {"nested": {"x": [1.0, math.nan]}},  # a NaN the flat check cannot see: nested values go through json
    {"big": 2**70},  # beyond orjson's 64-bit integers
    {"np": np.float32(1.5), "arr": np.arange(3)},  # numpy values: json's default hook
    {"raw": b"\x00\x01"},  # bytes: {"$base64": ...}
    # Rubin's time_processed: str(datetime), as before, not orjson's ISO "T" spelling
    {"time_processed": datetime.datetime(2025, 8, 15, 23, 51, 33, tzinfo=datetime.UTC)},
])
def test_records_orjson_cannot_write_faithfully_take_the_json_path(record):
    assert dumps_flat(record) == dumps(record)
    back = loads(dumps_flat(record))
    assert back.keys() == record.keys()
    if "nested" in record:
        assert math.isnan(back["nested"]["x"][1])
    if "big" in record:
        assert back["big"] == 2**70


def test_loads_reads_what_only_python_json_writes():
    assert math.isnan(loads('{"a": NaN}')["a"])
    assert loads('{"a": Infinity}')["a"] == math.inf
    assert loads('{"a": 1180591620717411303424}')["a"] == 2**70
    assert loads(None) is None
    assert loads(b'{"a": [1, "x"]}') == {"a": [1, "x"]}
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a stored NaN must come back as NaN, not as None)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _sample_alerts(shared_data, lsst_samples):
    """Flat alert records of real packets: ZTF (triggers and histories) and every Rubin sample."""
    import fastavro

    for path in [*sorted((shared_data / "ztf").rglob("*.avro"))[:20], *lsst_samples.values()]:
        try:
            with path.open("rb") as fh:
                records = list(fastavro.reader(fh))
        except (ValueError, EOFError, OSError):  # one ZTF sample is deliberately unreadable
            continue
        for record in records:
            if "candidate" in record:
                yield from [record["candidate"], *(record.get("prv_candidates") or [])]
            else:
                yield from [record["diaSource"], *(record.get("prvDiaSources") or [])]


def test_real_alert_properties_read_back_as_python_json_read_them(shared_data, lsst_samples):
    """The old path (json.dumps, json.loads) and the new one give the same values on real alerts."""
    checked = 0
    for a in _sample_alerts(shared_data, lsst_samples):
        props = {f"p_{k}": v for k, v in a.items() if not isinstance(v, (dict, list))}
        assert _same(loads(dumps_flat(props)), json.loads(dumps(props))), props
        checked += 1
    assert checked > 100
