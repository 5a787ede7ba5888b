"""Avro framing: container files, schema cache, Confluent, schemaless, single-object, errors."""

from __future__ import annotations

import io
import json
import math

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from broker.alert import Alert, Packet
from broker.ingest.decode import decode_message
from broker.ingest.framing import (
    DecodeError,
    SchemaCache,
    decode_confluent,
    decode_schemaless,
    decode_single_object,
    encode_confluent,
    encode_schemaless,
    encode_single_object,
    read_container,
    schema_fingerprint,
    write_container,
)
from broker.ingest.registries import LsstSchemaRegistry, SingleObjectRegistry, schema_id_for
from broker.ingest.validate import validate_packet

BAD_ZTF = "87704463155002.avro"


def _good_ztf(shared_data):
    files = sorted((shared_data / "ztf").glob("*/*.avro"))
    assert len(files) >= 50
    return [f for f in files if f.name != BAD_ZTF]


def _same(a, b) -> bool:
    """Deep equality in which NaN equals NaN (old ZTF packets carry NaN floats)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _fastavro_read(raw: bytes):
    reader = fastavro.reader(io.BytesIO(raw))
    return reader.writer_schema, list(reader)


@pytest.fixture(scope="module")
def registry():
    return LsstSchemaRegistry()


@pytest.fixture(scope="module")
def lsst_record(lsst_samples):
    _, recs = _fastavro_read(lsst_samples["7.1"].read_bytes())
    rec = recs[0]
    # The 7.1 sample's times are Unix seconds where its schema says MJD, which the normaliser refuses
    # (implausible_time, see test_normalize_lsst); framing is what this file tests, so give them the
    # schema's unit (the time the v8.0+ samples carry).
    for row in [rec["diaSource"], *(rec.get("prvDiaSources") or ()), *(rec.get("prvDiaForcedSources") or ()),
                *(rec.get("prvDiaNondetectionLimits") or ())]:
        row["midpointMjdTai"] = 60902.993305483615
    return rec


def test_container_records_equal_fastavro_reader(shared_data):
    for path in _good_ztf(shared_data):
        raw = path.read_bytes()
        schema, expected = _fastavro_read(raw)
        entry, got = read_container(raw, SchemaCache())
        assert _same(got, expected), path.name
        assert entry.name == "ztf.alert" == schema["name"]


def test_schema_cache_is_hit_on_second_decode(shared_data):
    cache = SchemaCache()
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "472263571115115000.avro").read_bytes()
    first = decode_message(raw, cache=cache)
    assert (cache.misses, cache.hits) == (1, 0)
    second = decode_message(raw, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    assert len(cache) == 1
    assert first[0].trigger.alert_id == second[0].trigger.alert_id
    # a packet with a different embedded schema (3.2 vs 3.0) is a new entry
    other = next((shared_data / "ztf" / "fink-datasim").glob("*.avro")).read_bytes()
    decode_message(other, cache=cache)
    assert (cache.misses, len(cache)) == (2, 2)


def test_deflate_container_round_trip(shared_data):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "396522680015040001.avro").read_bytes()
    schema, recs = _fastavro_read(raw)
    packed = write_container(recs * 3, schema, codec="deflate")
    _, got = read_container(packed, SchemaCache())
    assert _same(got, recs * 3)
    assert [p.trigger.alert_id for p in decode_message(packed, cache=SchemaCache())] == [
        f"ztf_candidate:{recs[0]['candid']}"] * 3


def test_unsupported_codec_is_rejected(shared_data):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "396522680015040001.avro").read_bytes()
    schema, recs = _fastavro_read(raw)
    packed = write_container(recs, schema, codec="bzip2")
    with pytest.raises(DecodeError) as exc:
        read_container(packed, SchemaCache())
    assert exc.value.reason == "unsupported_codec"
    assert "bzip2" in str(exc.value)


@pytest.mark.parametrize("keep", [3, 100, 5000, -1000, -17])
def test_truncated_container_raises(shared_data, keep):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "472263571115090000.avro").read_bytes()
    with pytest.raises(DecodeError) as exc:
        decode_message(raw[:keep], cache=SchemaCache())
    assert exc.value.reason == "truncated"


def test_corrupted_sync_marker_raises(shared_data):
    raw = bytearray((shared_data / "ztf" / "ztf-avro-alert" / "472263571115090000.avro").read_bytes())
    raw[-1] ^= 0xFF
    with pytest.raises(DecodeError) as exc:
        read_container(bytes(raw), SchemaCache())
    assert exc.value.reason == "bad_sync"


def test_malformed_ztf_packet_is_rejected_with_reason(shared_data):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / BAD_ZTF).read_bytes()
    for kwargs in ({}, {"hint": "ztf"}):
        with pytest.raises(DecodeError) as exc:
            decode_message(raw, cache=SchemaCache(), **kwargs)
        assert exc.value.reason == "bad_magic"
        assert "container" in str(exc.value)


def test_rubin_schema_ids_follow_lsst_alert_packet(registry):
    from lsst.alert.packet.schema import Schema, get_schema_path

    assert len(registry.known_ids) >= 15
    for sid in registry.known_ids:
        major, minor = registry.version_of(sid)
        rubin = Schema.from_file(f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc")
        assert rubin.get_schema_id() == sid == schema_id_for(major, minor)
        assert registry(sid)["name"] == f"lsst.v{major}_{minor}.alert"
    assert schema_id_for(7, 1) == 701


def test_confluent_round_trip(registry, lsst_record):
    parsed = registry(701)
    frame = encode_confluent(lsst_record, 701, parsed)
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == 701
    sid, got_schema, rec = decode_confluent(frame, registry)
    assert (sid, rec) == (701, lsst_record)
    packets = decode_message(frame, registry=registry)
    assert packets[0].schema == "lsst.v7_1.alert"
    assert packets[0].trigger.alert_id == f"lsst_diasource:{lsst_record['diaSource']['diaSourceId']}"


def test_unknown_confluent_schema_id(registry, lsst_record):
    frame = b"\x00" + (9999).to_bytes(4, "big") + encode_schemaless(lsst_record, registry(701))
    with pytest.raises(DecodeError) as exc:
        decode_message(frame, registry=registry)
    assert exc.value.reason == "unknown_schema_id"
    with pytest.raises(DecodeError) as exc:
        decode_message(frame[:4], hint="confluent", registry=registry)
    assert exc.value.reason == "truncated"


def test_schemaless_round_trip_and_mismatch(registry, lsst_record):
    body = encode_schemaless(lsst_record, registry(701))
    assert decode_schemaless(body, registry(701)) == lsst_record
    packets = decode_message(body, lsst_schema_version="7.1", registry=registry)
    assert packets[0].schema == "lsst.v7_1.alert"
    assert packets[0].trigger.ra == lsst_record["diaSource"]["ra"]
    with pytest.raises(DecodeError) as exc:  # same body, different writer schema
        decode_schemaless(body, registry(1101))
    assert exc.value.reason in {"schema_mismatch", "truncated"}
    with pytest.raises(DecodeError) as exc:
        decode_schemaless(body[: len(body) // 2], registry(701))
    assert exc.value.reason in {"truncated", "schema_mismatch"}
    with pytest.raises(DecodeError) as exc:
        decode_message(body, lsst_schema_version="99.0", registry=registry)
    assert exc.value.reason == "unknown_schema_id"


def test_single_object_round_trip(registry, lsst_record):
    locus_schema = fastavro.parse_schema({
        "type": "record", "name": "Locus", "namespace": "albireo",
        "fields": [{"name": "locus_id", "type": "string"}, {"name": "ra", "type": "double"},
                   {"name": "tags", "type": {"type": "array", "items": "string"}}],
    })
    rec = {"locus_id": "ANT2024abc", "ra": 12.5, "tags": ["nuclear", "sn"]}
    frame = encode_single_object(rec, locus_schema)
    assert frame[:2] == b"\xc3\x01"
    # the fingerprint bytes are fastavro's CRC-64-AVRO of the canonical form
    assert frame[2:10].hex() == fingerprint(to_parsing_canonical_form(locus_schema), "CRC-64-AVRO")
    assert encode_single_object(rec, locus_schema) == frame
    so_registry = SingleObjectRegistry([locus_schema])
    parsed, got = decode_single_object(frame, so_registry)
    assert got == rec and parsed is locus_schema
    with pytest.raises(DecodeError) as exc:
        decode_single_object(frame, SingleObjectRegistry())
    assert exc.value.reason == "unknown_fingerprint"
    # an LSST alert sent single-object decodes and normalises through decode_message
    lsst_frame = encode_single_object(lsst_record, registry(701))
    so_registry.register(registry(701))
    packets = decode_message(lsst_frame, single_object_registry=so_registry)
    assert packets[0].trigger.alert_id == f"lsst_diasource:{lsst_record['diaSource']['diaSourceId']}"


def test_crc64_matches_fastavro_for_real_schemas(registry, shared_data):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "472263571115090000.avro").read_bytes()
    schemas = [fastavro.parse_schema(_fastavro_read(raw)[0]), registry(701), registry(1101)]
    for parsed in schemas:
        expected = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        assert schema_fingerprint(parsed).to_bytes(8, "little").hex() == expected


def test_unknown_schema_name_is_rejected():
    schema = {"type": "record", "name": "other.alert", "fields": [{"name": "x", "type": "int"}]}
    with pytest.raises(DecodeError) as exc:
        decode_message(write_container([{"x": 1}], schema), cache=SchemaCache())
    assert exc.value.reason == "unknown_schema"
    with pytest.raises(DecodeError) as exc:
        decode_message(b"")
    assert exc.value.reason == "empty"


def test_embedded_schema_that_does_not_parse(shared_data):
    raw = (shared_data / "ztf" / "ztf-avro-alert" / "472263571115090000.avro").read_bytes()
    broken = raw.replace(b'"type": "record"', b'"type": "recxrd"', 1)
    assert broken != raw
    with pytest.raises(DecodeError) as exc:
        read_container(broken, SchemaCache())
    assert exc.value.reason == "bad_schema"


def _packet(ra: float, dec: float, alert_id: str = "ztf_candidate:1") -> Packet:
    alert = Alert(alert_id=alert_id, survey=1, mjd=59000.0, ra=ra, dec=dec, passband="g",
                  mag=18.0, magerr=0.1, maglim=20.0)
    return Packet(trigger=alert)


@pytest.mark.parametrize("ra,dec", [(math.nan, 0.0), (10.0, math.nan), (360.0, 0.0), (-0.1, 0.0),
                                    (10.0, 90.5), (10.0, -91.0)])
def test_validate_rejects_bad_coordinates(ra, dec):
    with pytest.raises(DecodeError) as exc:
        validate_packet(_packet(ra, dec))
    assert exc.value.reason == "invalid_coordinates"


def test_validate_accepts_edges_and_rejects_missing_ids():
    validate_packet(_packet(0.0, -90.0))
    validate_packet(_packet(359.999, 90.0))
    with pytest.raises(DecodeError) as exc:
        validate_packet(_packet(10.0, 10.0, alert_id=""))
    assert exc.value.reason == "missing_id"
    p = _packet(10.0, 10.0)
    p.history.append(Alert("", 2, 59000.0, math.nan, math.nan, "g", None, None, 20.0))
    with pytest.raises(DecodeError) as exc:
        validate_packet(p)
    assert exc.value.reason == "missing_id"


def test_every_shared_ztf_packet_validates(shared_data):
    for path in _good_ztf(shared_data):
        for packet in decode_message(path.read_bytes()):
            validate_packet(packet)


def test_http_registry_client_against_a_local_http_server(registry):
    """ConfluentRegistryClient against a real HTTP server on 127.0.0.1 serving Rubin schemas."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from broker.ingest.registries import ConfluentRegistryClient

    served = {701: json.dumps(registry(701))}
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            calls.append(self.path)
            sid = int(self.path.rsplit("/", 1)[-1])
            if sid in served:
                body = json.dumps({"schema": served[sid]}).encode()
                self.send_response(200)
            else:
                body = b'{"error_code": 40403, "message": "Schema not found"}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = ConfluentRegistryClient(f"http://127.0.0.1:{server.server_port}", timeout=5)
        parsed = client(701)
        assert parsed["name"] == "lsst.v7_1.alert"
        assert client(701) is parsed and calls == ["/schemas/ids/701"]  # cached
        with pytest.raises(DecodeError) as exc:
            client(702)
        assert exc.value.reason == "unknown_schema_id"
    finally:
        server.shutdown()
        server.server_close()
