"""Every snippet of docs/subscribing.md runs, as written, against the real consumer listener.

The operator's shell block runs through the real CLI (a fresh users database, the local Kafka);
the password it prints and the CA file it writes are what the Python blocks then use, with only
the placeholders replaced (user name, password, listener address, a stream only this run uses).
The portal's snippets (``web.snippets``) are the docs' blocks, so they run here too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from broker.config import load_config
from broker.emit import encode_locus
from broker.emit_antares import encode_antares
from broker.ops import services
from web import snippets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "subscribing.md"
EXAMPLE_BOOTSTRAP = "kafka.example.org:9094"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def kafka() -> dict[str, str]:
    services.up(["kafka"])
    return {"plaintext": services.endpoints()["kafka"], "consumers": services.check_kafka_consumer_listener()}


def test_the_portal_shows_the_docs_code():
    python = _blocks("python")
    assert snippets.confluent_avro(EXAMPLE_BOOTSTRAP, "albireo.loci.high_snr") in python
    assert snippets.antares_client(EXAMPLE_BOOTSTRAP, "high_snr") in python
    assert snippets.confluent_antares(EXAMPLE_BOOTSTRAP, "client.high_snr") in python
    assert snippets.stream_file("albireo-demo/streams/albireo.loci.high_snr.avro-stream") in python


def _locus(run: str, stream: str, i: int):
    from broker.alert import Alert
    from broker.locus import Locus

    locus = Locus(locus_id=f"ALBdocs{run}{i}", ra=10.0 + i, dec=-5.0)
    locus.add_alerts([Alert(f"ztf_candidate:{run}{i}", 1, 60000.5, 10.0 + i, -5.0, "g", 18.0, 0.1, 20.0, {})])
    locus.user_tags.add(stream)
    return locus


def test_every_snippet_of_subscribing_md_runs(kafka, tmp_path):
    from broker.adapters.streams.kafka import KafkaSink

    run = uuid.uuid4().hex[:8]
    user, stream = f"alice{run}", f"docs{run}"
    env = dict(os.environ, ALBIREO_USERS__DB=str(tmp_path / "users.sqlite"),
               ALBIREO_KAFKA__BOOTSTRAP_SERVERS=kafka["plaintext"])

    def sub(text: str) -> str:
        return text.replace("alice", user).replace("high_snr", stream)

    # the operator's commands, as written
    (shell,) = _blocks("bash")
    outputs = []
    for line in shell.strip().splitlines():
        words = shlex.split(sub(line), comments=True)
        assert words[0] == "albireo"
        proc = subprocess.run([sys.executable, "-m", "broker.cli", *words[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    password = re.search(r"Kafka password:\s+(\S+)", outputs[0]).group(1)
    assert re.search(r"Kafka bootstrap:\s+(\S+)", outputs[0]).group(1) == kafka["consumers"]
    assert (tmp_path / "albireo-ca.pem").read_bytes() == services.kafka_ca_file().read_bytes()

    try:
        # the pipeline's principal publishes two loci in each format
        sink = KafkaSink(kafka["plaintext"])
        ids = []
        for i in range(2):
            locus = _locus(run, stream, i)
            sink.publish(f"albireo.loci.{stream}", None, encode_locus(locus, stream))
            sink.publish(f"client.{stream}", None, encode_antares(locus))
            ids.append(locus.locus_id)
        sink.flush()
        from broker.adapters.streams.files import StreamFileSink

        files = StreamFileSink(tmp_path / "albireo-demo" / "streams")
        for i in range(2):
            files.publish(f"albireo.loci.{stream}", None, encode_locus(_locus(run, stream, i), stream))
        files.flush()

        python = _blocks("python")
        assert len(python) == 4
        ran = 0
        for code in python:
            code = (sub(code).replace("<your user name>", user).replace("<your Kafka password>", password)
                    .replace(EXAMPLE_BOOTSTRAP, kafka["consumers"]))
            cwd, want = tmp_path, ids  # the stream-file block reads what the file sink wrote under tmp_path
            proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=180)
            assert proc.returncode == 0, f"{code}\n{proc.stdout}\n{proc.stderr[-3000:]}"
            printed = [line.split()[0] if not line.startswith("client.") else line.split()[1]
                       for line in proc.stdout.splitlines() if line.strip()]
            assert printed == want, (code, proc.stdout)
            ran += 1
        assert ran == 4
    finally:
        from broker.assemble import open_users

        cfg = load_config(env=env)
        open_users(cfg).remove(user)
