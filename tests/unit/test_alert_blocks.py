"""Alert blocks (the Cassandra store's light-curve rows): every alert reads back as stored, once, in order.

The store's own round trip on the real server is in ``tests/contract/test_store_contract.py`` and
the upgrade from per-alert rows in ``tests/integration/test_cassandra_migrations.py``; these check
the encoding on real packets and the cases the server tests cannot reach cheaply (splitting,
duplicates left by a replay, values orjson alone would change).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import orjson
import pytest

from broker.adapters.storage.alert_blocks import (
    BLOCK_FORMAT,
    MAX_BLOCK_BYTES,
    block_id,
    block_json,
    decode_blocks,
    encode_blocks,
)
from broker.alert import SURVEY_ZTF_DETECTION, Alert
from broker.ingest.decode import decode_message


def _real_alerts(shared_data, lsst_samples) -> list[Alert]:
    from broker.ingest.framing import DecodeError

    out: list[Alert] = []
    for path in [*sorted((shared_data / "ztf").rglob("*.avro")), *lsst_samples.values()]:
        try:
            packets = decode_message(path.read_bytes())
        except DecodeError:  # the deliberately unreadable sample
            continue
        for p in packets:
            out += p.alerts
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _as_stored_before(a: Alert) -> dict:
    """What the per-alert rows read back: NaN columns as None (ra/dec as NaN), properties through json."""
    def col(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    return {"alert_id": a.alert_id, "mjd": a.mjd, "survey": a.survey, "ra": col(a.ra), "dec": col(a.dec),
            "passband": a.passband, "mag": col(a.mag), "magerr": col(a.magerr), "maglim": col(a.maglim),
            "object_id": a.object_id, "is_history": a.is_history, "properties": a.properties}


def _read(a: Alert) -> dict:
    d = _as_stored_before(a)
    d["ra"] = None if math.isnan(a.ra) else a.ra
    d["dec"] = None if math.isnan(a.dec) else a.dec
    return d


def test_real_packets_read_back_with_every_value(shared_data, lsst_samples):
    alerts = _real_alerts(shared_data, lsst_samples)
    assert len(alerts) > 500 and {a.survey for a in alerts} >= {1, 2, 4}
    unique: dict[str, Alert] = {}
    for a in alerts:  # the samples repeat ids (history rows, Rubin's fake data across schema versions)
        unique.setdefault(a.alert_id, a)
    blocks = encode_blocks(list(unique.values()))
    got = decode_blocks("ALB-x", [body for _, _, body in blocks])
    assert len(got) == len(unique) > 400
    assert [(a.mjd, a.alert_id) for a in got] == sorted((a.mjd, a.alert_id) for a in unique.values())
    for g in got:
        want = unique[g.alert_id]
        assert g.locus_id == "ALB-x"
        assert _same(_read(g), _as_stored_before(want)), g.alert_id


def _alert(i: int, *, history: bool = False, **kw) -> Alert:
    base = dict(alert_id=f"ztf_candidate:{i}", survey=SURVEY_ZTF_DETECTION, mjd=60000.0 + i / 10, ra=10.0, dec=-5.0,
                passband="g", mag=18.0 + i / 100, magerr=0.05, maglim=20.5,
                properties={"ztf_fid": 1, "ztf_ssnamenr": "null", "ztf_x": None}, object_id="ZTF24aaaaaaa",
                is_history=history)
    base.update(kw)
    return Alert(**base)


def test_nan_and_infinity_survive_in_columns_and_properties():
    a = _alert(1, mag=math.inf, magerr=math.nan, properties={"ztf_a": math.nan, "ztf_b": -math.inf, "ztf_c": None})
    b = _alert(2, ra=math.nan, dec=math.nan, mag=None)
    (_, _, body), = encode_blocks([a, b])
    x, y = decode_blocks("L", [body])
    assert x.mag == math.inf and x.magerr is None  # NaN columns read back as None, as the per-alert rows did
    assert math.isnan(x.properties["ztf_a"]) and x.properties["ztf_b"] == -math.inf and x.properties["ztf_c"] is None
    assert math.isnan(y.ra) and math.isnan(y.dec) and y.mag is None
    assert y.properties["ztf_ssnamenr"] == "null"


def test_a_long_history_is_split_and_read_back_whole():
    alerts = [_alert(i, history=i > 0, properties={"ztf_pad": "x" * 900, "ztf_i": i}) for i in range(300)]
    blocks = encode_blocks(alerts, max_bytes=20_000)
    assert len(blocks) > 10 and all(len(block_json(body)) <= 20_000 + 1_500 for _, _, body in blocks)
    assert sorted(i for _, ids, _ in blocks for i in ids) == sorted(a.alert_id for a in alerts)
    got = decode_blocks("L", [body for _, _, body in reversed(blocks)])
    assert [a.alert_id for a in got] == [a.alert_id for a in alerts]  # mjd order, whatever the block order
    assert [a.properties["ztf_i"] for a in got] == list(range(300))


def test_an_alert_in_two_blocks_reads_back_once_and_the_trigger_wins():
    """A replay that cut the batch elsewhere wrote some alerts into a second block."""
    trigger = _alert(5, properties={"ztf_fid": 1, "ztf_rb": 0.9})
    history_copy = dataclasses.replace(trigger, is_history=True, properties={"ztf_fid": 1})
    first = encode_blocks([_alert(1), _alert(2), history_copy])
    second = encode_blocks([_alert(2), trigger, _alert(7)])
    for order in ([first, second], [second, first]):
        got = decode_blocks("L", [body for blocks in order for _, _, body in blocks])
        assert [a.alert_id for a in got] == [f"ztf_candidate:{i}" for i in (1, 2, 5, 7)]
        five = got[2]
        assert not five.is_history and five.properties["ztf_rb"] == 0.9


def test_block_ids_follow_the_alerts_not_their_order():
    alerts = [_alert(i) for i in range(5)]
    assert block_id(alerts) == block_id(list(reversed(alerts)))
    assert block_id(alerts) != block_id(alerts[:4])
    assert [b[0] for b in encode_blocks(alerts)] == [b[0] for b in encode_blocks(alerts[::-1])]
    assert [b[2] for b in encode_blocks(alerts)] == [b[2] for b in encode_blocks(alerts[::-1])]  # identical cells


def test_a_block_is_self_describing_json_and_a_newer_format_is_refused():
    (_, _, body), = encode_blocks([_alert(1)])
    doc = orjson.loads(zlib.decompress(body))  # any zlib reads it
    assert doc["format"] == BLOCK_FORMAT and doc["columns"][0] == "alert_id" and doc["columns"][-1] == "properties"
    assert doc["rows"][0][0] == "ztf_candidate:1"
    assert decode_blocks("L", [orjson.dumps(doc)])[0].alert_id == "ztf_candidate:1"  # stored uncompressed
    with pytest.raises(ValueError, match="format"):
        decode_blocks("L", [orjson.dumps({**doc, "format": BLOCK_FORMAT + 1})])


def test_a_block_that_would_inflate_without_bound_is_refused():
    bomb = zlib.compress(b"{" + b" " * (3 * MAX_BLOCK_BYTES) + b"}", 9)
    assert len(bomb) < 10_000
    with pytest.raises(ValueError, match="inflates past"):
        decode_blocks("L", [bomb])


def test_real_alerts_compress():
    """The point of compressing: ZTF alert JSON shrinks several times (measured 5.2x on the samples)."""
    alerts = [_alert(i, properties={"ztf_fid": 1 + i % 2, "ztf_rb": 0.5 + i / 1000, "ztf_ssnamenr": "null"})
              for i in range(200)]
    (_, _, body), = encode_blocks(alerts)
    assert len(block_json(body)) > 3 * len(body)
