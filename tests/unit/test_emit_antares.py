"""ANTARES-format streams: what the pipeline publishes is what the unmodified antares-client decodes.

The decoding side is antares-client's own code (``antares_client.stream._parse_message``: zlib,
``bson.loads``, its pydantic message model, its ``Locus``); nothing of ours reads the messages back
in the first test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from antares_client.stream import _parse_message

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.alert import Alert
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import ConfigError, load_config
from broker.emit import StreamRouter, decode_locus_message
from broker.emit_antares import antares_document, decode_antares, encode_antares
from broker.filtering.runner import InProcessRunner, load_builtin_filters
from broker.locus import Locus


class _KafkaMessage:
    """The two methods of ``confluent_kafka.Message`` that ``_parse_message`` calls."""

    def __init__(self, value: bytes):
        self._value = value

    def error(self):
        return None

    def value(self) -> bytes:
        return self._value


def _messages(sink: StreamFileSink, topic: str) -> list[bytes]:
    path = sink.path_for(topic)
    return list(iter_stream_file(path)) if Path(path).exists() else []


def test_pipeline_publishes_each_stream_in_its_configured_format(tmp_path, shared_data):
    cfg = load_config(env={"ALBIREO_STREAMS__FORMATS": "high_snr=antares,fast_riser=both"})
    cfg.catalogs.enabled = False
    assoc = Associator(cfg.association.radius_arcsec)
    store = SQLiteStore(tmp_path / "s.sqlite", assoc.order)
    sink = StreamFileSink(tmp_path / "out")
    runner = InProcessRunner(load_builtin_filters(["high_snr", "fast_riser"]))
    pipe = build_pipeline(cfg, store, sink, filters=runner, associator=assoc)
    res = pipe.process(FileSource([shared_data / "ztf"]).poll_batch(10_000, 0))
    assert res.tags["high_snr"] >= 1 and res.tags["fast_riser"] >= 1

    antares = _messages(sink, "client.high_snr")
    assert len(antares) == res.tags["high_snr"]
    assert _messages(sink, "albireo.loci.high_snr") == []  # antares only
    stored = {x.locus_id: x for batch in store.iter_loci() for x in batch}
    for raw in antares:
        locus = _parse_message(_KafkaMessage(raw))  # antares-client's own decoding
        mine = stored[locus.locus_id]
        assert "high_snr" in locus.tags
        assert math.isclose(locus.ra, mine.ra) and math.isclose(locus.dec, mine.dec)
        assert locus.properties["num_alerts"] >= 1
        assert set(locus.properties) == set(mine.properties)
        assert locus.properties["newest_alert_snr"] > 50  # the property high_snr tags on
    # both: one Avro message and one ANTARES message per tagged locus, the same loci
    avro = [decode_locus_message(m)["locus_id"] for m in _messages(sink, "albireo.loci.fast_riser")]
    ant = [_parse_message(_KafkaMessage(m)).locus_id for m in _messages(sink, "client.fast_riser")]
    assert len(avro) == res.tags["fast_riser"] and sorted(avro) == sorted(ant)
    assert res.published == len(antares) + len(avro) + len(ant)


def test_hostile_property_values_encode_to_what_the_client_accepts():
    locus = Locus(locus_id="ALB2024hostile", ra=359.999, dec=-89.9)
    locus.user_properties.update({
        "nan": float("nan"), "inf": float("inf"), "huge": 2**70, "np": np.float32(1.5), "np_int": np.int64(7),
        "raw": b"\x00\xff", "nested": {"a": [1, 2]}, "bad\x00key": "x", "none": None, "flag": True,
        "text": "é\x00z",
    })
    locus.user_tags.update({"t2", "t1"})
    locus.catalog_objects = {"openngc": [{"name": "NGC 1"}], "2mass": []}
    parsed = _parse_message(_KafkaMessage(encode_antares(locus)))
    p = parsed.properties
    assert math.isnan(p["nan"]) and p["inf"] == float("inf")
    assert p["huge"] == str(2**70) and p["np"] == 1.5 and p["np_int"] == 7 and isinstance(p["np_int"], int)
    assert p["raw"] is None and p["nested"] == '{"a":[1,2]}' and p["badkey"] == "x"
    assert p["none"] is None and p["flag"] is True and p["text"] == "é\x00z"
    assert parsed.tags == ["t1", "t2"] and parsed.catalogs == ["2mass", "openngc"]
    assert parsed.locus_id == "ALB2024hostile" and parsed.dec == -89.9


def test_the_document_has_exactly_antares_fields_and_bombs_are_bounded():
    locus = Locus(locus_id="ALB2024x", ra=1.0, dec=2.0)
    assert set(antares_document(locus)) == {"id", "ra", "dec", "properties", "tags", "catalogs"}
    assert decode_antares(encode_antares(locus))["id"] == "ALB2024x"
    import zlib

    with pytest.raises(ValueError, match="inflates beyond"):
        decode_antares(zlib.compress(b"\x00" * 2_000_000), max_bytes=1_000_000)


def test_router_topics_and_formats():
    r = StreamRouter(formats={"a": "antares", "b": "both"})
    assert r.format_of("a") == "antares" and r.format_of("c") == "albireo"
    assert r.topics("x") == ["albireo.loci.x", "client.x"]
    locus = Locus(locus_id="ALB2024y", ra=1.0, dec=2.0)
    locus.add_alerts([Alert("ztf_candidate:9", 1, 60000.5, 1.0, 2.0, "g", 18.0, 0.1, 20.0, {}, "ZTF24b")])
    assert [t for t, _ in r.messages(locus, "a")] == ["client.a"]
    assert [t for t, _ in r.messages(locus, "b")] == ["albireo.loci.b", "client.b"]
    assert [t for t, _ in r.messages(locus, "c")] == ["albireo.loci.c"]
    with pytest.raises(ConfigError, match="streams.formats.a"):
        load_config(env={"ALBIREO_STREAMS__FORMATS": "a=bson"})
    with pytest.raises(ConfigError, match="streams.antares_prefix"):
        load_config(env={"ALBIREO_STREAMS__ANTARES_PREFIX": "albireo.loci."})
