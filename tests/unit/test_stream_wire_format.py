"""The stream wire format: every locus message is one Avro container file that fastavro alone reads.

The pipeline runs on real ZTF packets (``../shared/data/ztf``) with a filter that tags every locus;
the stream file it writes is then read the way the portal and ``docs/subscribing.md`` say, in a
fresh interpreter that never imports Albireo (the snippet runs as shown, only its path replaced).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.alert import Alert
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.emit import CONTAINER_MAGIC, decode_locus_message, encode_locus, locus_schema
from broker.filtering.contract import BaseFilter
from broker.filtering.runner import InProcessRunner, load_filter_class
from broker.ingest.framing import encode_single_object
from broker.locus import Locus
from web import snippets

DOC = Path(__file__).resolve().parents[2] / "docs" / "subscribing.md"
DOC_PATH = "albireo-demo/streams/albireo.loci.high_snr.avro-stream"


class _TagsAll(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "high_snr", "description": "every locus (test)"}]

    def _run(self, locus):
        locus.tag("high_snr")
        locus.set_property("seen_mag", float(locus.alert.mag or 0.0))


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory, shared_data) -> tuple[Path, SQLiteStore]:
    tmp = tmp_path_factory.mktemp("wire")
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp / "store.sqlite", assoc.order)
    sink = StreamFileSink(tmp / "albireo-demo" / "streams")
    runner = InProcessRunner([load_filter_class(_TagsAll, priority=0)])
    pipe = build_pipeline(cfg, store, sink, filters=runner, associator=assoc)
    pipe.process(FileSource([shared_data / "ztf"]).poll_batch(10_000, 0))
    sink.flush()
    return sink.path_for("albireo.loci.high_snr"), store


def test_every_message_is_a_one_record_container_file(stream_file):
    path, store = stream_file
    messages = list(iter_stream_file(path))
    assert len(messages) > 10
    for raw in messages:
        assert raw[:4] == CONTAINER_MAGIC
        reader = fastavro.reader(io.BytesIO(raw))
        (rec,) = list(reader)
        assert json.loads(reader.metadata["avro.schema"])["name"] == "albireo.v1.locus"
        assert reader.metadata["albireo.locus_schema_version"] == rec["schema_version"] == "1"
        # as JSON text: survey properties hold NaN, which never equals itself
        assert json.dumps(rec, sort_keys=True, default=str) == json.dumps(decode_locus_message(raw), sort_keys=True, default=str)
        assert "high_snr" in rec["tags"]
    # every locus the stream carries is a stored locus, with its position
    last = {}
    for raw in messages:
        rec = decode_locus_message(raw)
        last[rec["locus_id"]] = rec
    stored = store.load_loci(list(last))
    assert set(stored) == set(last)
    for lid, rec in last.items():
        assert rec["ra"] == pytest.approx(stored[lid].ra) and rec["dec"] == pytest.approx(stored[lid].dec)


def test_the_portal_and_docs_stream_file_snippet_runs_as_shown(stream_file, tmp_path):
    path, _ = stream_file
    code = snippets.stream_file(DOC_PATH)
    assert code in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    want = [decode_locus_message(raw)["locus_id"] for raw in iter_stream_file(path)]
    # a fresh isolated interpreter (-I: no PYTHONPATH, no cwd on the path); the code imports only fastavro
    proc = subprocess.run([sys.executable, "-I", "-c", code.replace(DOC_PATH, str(path))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[0] for line in proc.stdout.splitlines()] == want


def test_the_kafka_snippet_reads_the_value_with_fastavro_only():
    """The loop body of the confluent-kafka snippet, on a message value the sink would send."""
    code = snippets.confluent_avro("kafka.example.org:9094", "albireo.loci.high_snr")
    assert "fastavro.reader(io.BytesIO(msg.value()))" in code and "broker" not in code
    locus = Locus(locus_id="ALB2026wire", ra=12.5, dec=-3.25)
    locus.add_alerts([Alert("ztf_candidate:9", 1, 60000.1, 12.5, -3.25, "g", 18.0, 0.1, 20.0, {"ztf_rb": 0.9})])
    locus.user_tags.add("high_snr")
    (rec,) = list(fastavro.reader(io.BytesIO(encode_locus(locus, "high_snr"))))
    assert rec["locus_id"] == "ALB2026wire" and rec["tags"] == ["high_snr"]
    assert rec["alert"]["properties"]["ztf_rb"] == 0.9


def test_old_single_object_frames_still_decode_and_garbage_is_refused():
    locus = Locus(locus_id="ALB2026old", ra=1.0, dec=2.0)
    locus.add_alerts([Alert("ztf_candidate:8", 1, 60000.1, 1.0, 2.0, "g", 18.0, 0.1, 20.0, {})])
    from broker.emit import locus_message

    old = encode_single_object(locus_message(locus, "s"), locus_schema())
    assert decode_locus_message(old)["locus_id"] == "ALB2026old"
    with pytest.raises(ValueError, match="not a locus message"):
        decode_locus_message(b"\x00\x01garbage")
