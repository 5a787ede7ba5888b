"""A survey is recognised by the record's fields, not its schema's name; empty containers; schemaless ZTF.

Every packet here is a real one (../shared/data, lsst-alert-packet's samples) re-serialised the way
other tools do it: the record renamed as a Spark job names it (``topLevelRecord``, nested records in
its namespace), sometimes with extra columns, written with fastavro.
"""

from __future__ import annotations

import copy
import io

import fastavro
import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import StreamFileSink
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import ConfigError, load_config, validate
from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError, SchemaCache, encode_schemaless, read_container_header
from broker.ingest.surveys.ztf import schema_versions, ztf_schema
from broker.ports import Message

#: one real packet per ZTF schema generation (pre-1.0, 2.0, 3.0, 3.1, 3.2, 3.5 forced photometry).
ZTF_PACKETS = ("87704463155000.avro", "396522680015040002.avro", "472263571115090000.avro",
               "472263571115115000.avro", "472263571115115011.avro", "2019_01_10_739260766315010006.avro",
               "forcedphot_test_1660293514215020000.avro")


def _read(path):
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        return reader.writer_schema, list(reader)


def spark_schema(schema: dict, extra_fields: list[dict] = ()) -> dict:
    """``schema`` renamed as Spark's Avro writer names a record: ``topLevelRecord``, nested records in
    its namespace (``topLevelRecord.candidate``), references renamed alike; ``extra_fields`` appended."""
    schema = copy.deepcopy(schema)
    top = schema["name"]
    renames: dict[str, str] = {}

    def new_name(full: str) -> str:
        return "topLevelRecord" if full == top else "topLevelRecord." + full.rsplit(".", 1)[-1]

    def walk(t):
        if isinstance(t, str):
            return renames.get(t, t)
        if isinstance(t, list):
            return [walk(x) for x in t]
        if isinstance(t, dict):
            if t.get("type") == "record":
                full = t["name"] if "." in t["name"] or not t.get("namespace") else f"{t['namespace']}.{t['name']}"
                renames[full] = new_name(full)
                t["name"] = renames[full]
                t.pop("namespace", None)
                for f in t["fields"]:
                    f["type"] = walk(f["type"])
            elif t.get("type") == "array":
                t["items"] = walk(t["items"])
            elif t.get("type") == "map":
                t["values"] = walk(t["values"])
        return t

    schema = walk(schema)
    schema["fields"] = [*schema["fields"], *extra_fields]
    return schema


def _container(schema: dict, records: list[dict]) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    return out.getvalue()


def _same_packet(a, b) -> None:
    assert a.trigger.alert_id == b.trigger.alert_id and a.trigger.mjd == b.trigger.mjd
    assert (a.trigger.ra, a.trigger.dec, a.trigger.mag) == (b.trigger.ra, b.trigger.dec, b.trigger.mag)
    assert [h.alert_id for h in a.history] == [h.alert_id for h in b.history]
    assert a.cutouts == b.cutouts


@pytest.mark.parametrize("name", ZTF_PACKETS)
def test_ztf_alerts_renamed_by_spark_are_ztf_alerts(shared_data, name):
    path = shared_data / "ztf" / "ztf-avro-alert" / name
    schema, records = _read(path)
    (original,) = decode_message(path.read_bytes(), cache=SchemaCache())
    renamed = spark_schema(schema)
    assert renamed["name"] == "topLevelRecord"
    (packet,) = decode_message(_container(renamed, records), cache=SchemaCache())
    assert packet.schema == "topLevelRecord" and packet.trigger.survey == original.trigger.survey == 1
    _same_packet(packet, original)
    assert packet.trigger.properties == original.trigger.properties


def test_extra_columns_are_kept_as_properties(shared_data):
    path = shared_data / "ztf" / "fink-datasim" / "697252845015010002.avro"
    schema, (rec,) = _read(path)
    extra = [{"name": "finkclass", "type": ["null", "string"], "default": None},
             {"name": "rf_snia_vs_nonia", "type": "double"},
             {"name": "spark_meta", "type": {"type": "record", "name": "meta",
                                             "fields": [{"name": "topic", "type": "string"},
                                                        {"name": "offset", "type": "long"}]}},
             {"name": "lc_features", "type": {"type": "array", "items": "double"}}]
    row = {**rec, "finkclass": "SN candidate", "rf_snia_vs_nonia": 0.82,
           "spark_meta": {"topic": "ztf_20181208", "offset": 4242}, "lc_features": [1.0, 2.0]}
    (packet,) = decode_message(_container(spark_schema(schema, extra), [row]), cache=SchemaCache())
    (original,) = decode_message(path.read_bytes(), cache=SchemaCache())
    _same_packet(packet, original)
    props = packet.trigger.properties
    assert props["ztf_finkclass"] == "SN candidate" and props["ztf_rf_snia_vs_nonia"] == 0.82
    assert props["ztf_spark_meta_topic"] == "ztf_20181208" and props["ztf_spark_meta_offset"] == 4242
    assert "ztf_lc_features" not in props  # a list is no property value
    assert {k: v for k, v in props.items() if k in original.trigger.properties} == original.trigger.properties


def test_rubin_alerts_renamed_are_rubin_alerts_and_the_name_is_only_a_hint(lsst_samples):
    path = lsst_samples["11.1"]
    schema, records = _read(path)
    (original,) = decode_message(path.read_bytes(), cache=SchemaCache())
    extra = [{"name": "broker_score", "type": "float"}]
    rows = [{**r, "broker_score": 0.5} for r in records]
    (packet,) = decode_message(_container(spark_schema(schema, extra), rows), cache=SchemaCache())
    _same_packet(packet, original)
    assert packet.trigger.survey == 4 and packet.trigger.properties["lsst_broker_score"] == 0.5
    # a Rubin record under ZTF's own schema name is still a Rubin alert
    lying = spark_schema(schema)
    lying["name"] = "ztf.alert"
    (packet,) = decode_message(_container(lying, records), cache=SchemaCache())
    assert packet.trigger.alert_id == original.trigger.alert_id and packet.trigger.survey == 4


def test_a_record_of_neither_survey_is_rejected_with_its_fields(shared_data):
    path = shared_data / "ztf" / "fink-datasim" / "697252845015010002.avro"
    schema, (rec,) = _read(path)
    renamed = spark_schema(schema)
    renamed["fields"] = [f for f in renamed["fields"] if f["name"] != "candidate"]
    rec = {k: v for k, v in rec.items() if k != "candidate"}
    with pytest.raises(DecodeError) as exc:
        decode_message(_container(renamed, [rec]), cache=SchemaCache())
    assert exc.value.reason == "unknown_schema" and "objectId" in str(exc.value)


def _pipeline(tmp_path, **kafka):
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    for k, v in kafka.items():
        setattr(cfg.kafka, k, v)
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / "s.sqlite", assoc.order)
    return store, build_pipeline(cfg, store, StreamFileSink(tmp_path / "out"), associator=assoc)


def test_an_empty_container_is_skipped_and_counted_not_a_dead_letter(tmp_path, shared_data):
    path = shared_data / "ztf" / "ztf-avro-alert" / "2019_01_10_739260766315010006.avro"
    raw = path.read_bytes()
    header = read_container_header(raw)
    empty = raw[: header.data_start]  # the real header and sync marker, zero blocks
    assert decode_message(empty, cache=SchemaCache()) == []
    store, pipe = _pipeline(tmp_path)
    res = pipe.process([Message(empty, "t", 0, 0), Message(raw, "t", 0, 1), Message(b"junk", "t", 0, 2)])
    assert (res.messages, res.empty, res.packets, res.rejected_total) == (3, 1, 1, 1)
    assert res.messages == res.empty + res.rejected_total + 1  # one message held alerts
    assert store.counts()["dead_letters"] == 1 == res.dead_letters_new
    assert {d.payload for d in store.dead_letters()} == {b"junk"}


@pytest.mark.parametrize("version,name", [("2.0", "472263571115090000.avro"), ("3.0", "472263571115115000.avro"),
                                          ("3.1", "472263571115115011.avro"),
                                          ("3.2", "2019_01_10_739260766315010006.avro")])
def test_schemaless_ztf_bodies_with_a_configured_version(tmp_path, shared_data, version, name):
    path = shared_data / "ztf" / "ztf-avro-alert" / name
    _, (rec,) = _read(path)
    body = encode_schemaless(rec, ztf_schema(version))
    assert not body.startswith(b"Obj")
    (original,) = decode_message(path.read_bytes(), cache=SchemaCache())
    (packet,) = decode_message(body, ztf_schema_version=version)
    _same_packet(packet, original)
    assert packet.trigger.properties == original.trigger.properties
    with pytest.raises(DecodeError) as exc:
        decode_message(body)  # no version configured: not guessable
    assert exc.value.reason == "bad_magic"
    store, pipe = _pipeline(tmp_path, schemaless_ztf_version=version)
    res = pipe.process([Message(body, "ztf", 0, 0), Message(path.read_bytes(), "ztf", 0, 1)])
    assert res.packets == 2 and res.duplicates == 1 and res.rejected_total == 0  # the same alert, either framing
    assert store.existing_alert_ids([original.trigger]) == {original.trigger.alert_id}


def test_schemaless_ztf_version_is_validated():
    assert {"2.0", "3.0", "3.1", "3.2"} <= set(schema_versions())
    cfg = load_config(env={})
    cfg.kafka.schemaless_ztf_version = "9.9"
    with pytest.raises(ConfigError, match="schemas/ztf"):
        validate(cfg)
    cfg.kafka.schemaless_ztf_version, cfg.kafka.schemaless_lsst_version = "3.2", "7.1"
    with pytest.raises(ConfigError, match="one writer schema"):
        validate(cfg)
    cfg.kafka.schemaless_lsst_version = ""
    validate(cfg)
    with pytest.raises(DecodeError) as exc:
        decode_message(b"\x02body", ztf_schema_version="9.9")
    assert exc.value.reason == "unknown_schema_version"
