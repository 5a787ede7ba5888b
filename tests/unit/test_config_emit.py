"""Configuration precedence and the outgoing locus message format."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from broker.alert import Alert
from broker.config import ConfigError, load_config, to_toml
from broker.emit import decode_locus_message, encode_locus, locus_schema
from broker.ingest.framing import schema_fingerprint
from broker.locus import Locus, Provenance


def test_defaults_file_then_environment(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[kafka]\nbootstrap_servers = "file:9092"\nbatch_size = 7\n[association]\nradius_arcsec = 1.5\n')
    cfg = load_config(path, env={"ALBIREO_KAFKA__BOOTSTRAP_SERVERS": "env:9092", "ALBIREO_KAFKA__INPUT_TOPICS": "a,b"})
    assert cfg.kafka.bootstrap_servers == "env:9092"
    assert cfg.kafka.batch_size == 7 and cfg.kafka.input_topics == ["a", "b"]
    assert cfg.association.radius_arcsec == 1.5
    assert load_config(env={}).store.backend == "sqlite"
    assert 'bootstrap_servers = "env:9092"' in to_toml(cfg)


@pytest.mark.parametrize(
    "text,env,msg",
    [
        ("[kafka]\nbatch_size = \"many\"\n", {}, "kafka.batch_size"),
        ("[nosuch]\nx = 1\n", {}, "unknown section"),
        ("[kafka]\nnosuch = 1\n", {}, "unknown setting kafka.nosuch"),
        ("", {"ALBIREO_KAFKA__TRANSACTIONAL": "perhaps"}, "kafka.transactional"),
        ("[service]\nstall_timeout_s = 5\n", {}, "service.stall_timeout_s"),
        ("[kafka]\npoll_timeout_s = 10\n[service]\nstall_timeout_s = 60\n", {}, "service.stall_timeout_s"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, env, msg):
    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        load_config(path, env=env)


def test_locus_message_round_trip_names_its_schema():
    locus = Locus(locus_id="ALB2024abc", ra=12.5, dec=-3.25)
    locus.add_alerts([
        Alert("ztf_candidate:1", 1, 60000.1, 12.5, -3.25, "g", 18.0, 0.1, 20.0, {"ztf_rb": 0.9}, "ZTF24a"),
        Alert("ztf_upper_limit:ZTF24a-2", 2, 59999.0, float("nan"), float("nan"), "R", None, None, 20.3, {}),
    ])
    locus.user_tags.add("high_snr")
    locus.provenance["high_snr"] = Provenance("high_snr", "abc123", "0.1.0")
    locus.catalog_objects = {"openngc": [{"name": "NGC 1", "match_distance_arcsec": 2.5}]}
    raw = encode_locus(locus, "high_snr")
    assert raw[:4] == b"Obj\x01"  # one Avro container file; its header carries the schema
    (via_fastavro,) = fastavro.reader(io.BytesIO(raw))
    header_schema = fastavro.parse_schema(json.loads(fastavro.reader(io.BytesIO(raw)).metadata["avro.schema"]))
    assert schema_fingerprint(header_schema) == schema_fingerprint(locus_schema())
    rec = decode_locus_message(raw)
    assert rec == via_fastavro
    assert rec["locus_id"] == "ALB2024abc" and rec["stream"] == "high_snr" and rec["tags"] == ["high_snr"]
    assert rec["alert"]["alert_id"] == "ztf_candidate:1" and rec["alert"]["properties"]["ztf_rb"] == 0.9
    assert [p["alert_id"] for p in rec["lightcurve"]] == ["ztf_upper_limit:ZTF24a-2", "ztf_candidate:1"]
    assert rec["lightcurve"][0]["mag"] is None and rec["lightcurve"][0]["maglim"] == 20.3
    assert rec["catalog_matches"][0]["distance_arcsec"] == 2.5
    assert rec["provenance"]["high_snr"]["revision"] == "abc123"
    assert rec["properties"]["num_alerts"] == 2


def test_metrics_are_served_in_prometheus_format():
    import urllib.request

    from broker.metrics import Metrics
    from broker.metrics_server import serve_metrics

    m = Metrics()
    m.inc("rejected", 3, reason="bad_magic")
    with m.time("decode"):
        pass
    server = serve_metrics(m, 0)
    try:
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'albireo_rejected_total{reason="bad_magic"} 3.0' in text
    assert 'albireo_stage_seconds_count{stage="decode"} 1.0' in text
    assert 'albireo_stage_seconds_bucket{le="+Inf",stage="decode"} 1.0' in text
