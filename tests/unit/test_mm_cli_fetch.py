"""``albireo notices``, ``albireo replay`` of notices, sky-map downloads, the [multimessenger] settings.

Downloads are tested against a real HTTP server on loopback serving LVK's sample map (the VOEvent's
``skymap_fits`` URL rewritten to it): the notice's localization becomes that map. Unreachable,
non-FITS and oversized answers are refused with the reason, and the notice keeps its error circle.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http_dir(tmp_path):
    """A loopback HTTP server over ``tmp_path/www`` (stopped after the test)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetcher_downloads_checks_and_refuses(http_dir, shared_data):
    from broker.adapters.http import HttpSkymapFetcher

    www, base = http_dir
    data = (shared_data / "lvk" / "bayestar.multiorder.fits").read_bytes()
    (www / "bayestar.multiorder.fits").write_bytes(data)
    (www / "page.fits").write_text("<html>not found</html>")
    f = HttpSkymapFetcher(timeout_s=5, max_bytes=len(data) + 10)
    assert f.fetch(f"{base}/bayestar.multiorder.fits") == data
    failures = {}
    for url in (f"{base}/page.fits", f"{base}/missing.fits", "file:///etc/passwd", "ftp://example.org/x.fits",
                "http://127.0.0.1:9/x.fits"):
        with pytest.raises(OSError) as exc:
            f.fetch(url)
        failures[url] = str(exc.value)
    assert "not a FITS file" in failures[f"{base}/page.fits"]
    assert "HTTP 404" in failures[f"{base}/missing.fits"]
    assert "only http(s)" in failures["file:///etc/passwd"] and "only http(s)" in failures["ftp://example.org/x.fits"]
    assert "unreachable" in failures["http://127.0.0.1:9/x.fits"]
    with pytest.raises(OSError, match="larger than"):
        HttpSkymapFetcher(timeout_s=5, max_bytes=1000).fetch(f"{base}/bayestar.multiorder.fits")
    mirror = HttpSkymapFetcher(mirror_dir=str(www))  # a local copy by file name wins; no request made
    assert mirror.fetch("https://emfollow.docs.ligo.org/userguide/_static/bayestar.multiorder.fits") == data


def test_a_voevent_map_url_is_downloaded_and_used(http_dir, shared_data, tmp_path):
    from broker.adapters.http import HttpSkymapFetcher
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import StreamFileSink
    from broker.multimessenger.stage import NoticePipeline
    from broker.ports import Message

    www, base = http_dir
    (www / "bayestar.multiorder.fits").write_bytes((shared_data / "lvk" / "bayestar.multiorder.fits").read_bytes())
    xml = (shared_data / "lvk" / "MS181101ab-2-Preliminary.xml").read_bytes().replace(
        b"https://emfollow.docs.ligo.org/userguide/_static/bayestar.multiorder.fits", f"{base}/bayestar.multiorder.fits"
        .encode())
    store = SQLiteStore(tmp_path / "s.sqlite", 15)
    pipe = NoticePipeline(store, SQLiteIndex(tmp_path / "i.sqlite"), StreamFileSink(tmp_path / "out"),
                          fetcher=HttpSkymapFetcher(timeout_s=5))
    pipe.process([Message(xml, "gcn.classic.voevent.LVC_PRELIMINARY")])
    ev = store.event("MS181101ab")
    assert ev["localization"]["shape"] == "map"
    assert store.notice_skymap(ev["localization_notice_id"]) == (www / "bayestar.multiorder.fits").read_bytes()
    assert ev["summary"]["areas"]["90"] == pytest.approx(30.98, rel=0.01)
    assert pipe.metrics.counter("skymap_downloads", outcome="ok") == 1


def test_an_unreachable_map_falls_back_to_the_circle(shared_data, tmp_path):
    from broker.adapters.http import HttpSkymapFetcher
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import StreamFileSink
    from broker.multimessenger.stage import NoticePipeline
    from broker.ports import Message

    doc = json.loads((shared_data / "gcn" / "notices" / "icecube"
                      / "single_neutrino_alerts.gold_bronze_track_alerts.example.json").read_text())
    doc["healpix_url"] = "http://127.0.0.1:9/run00140078.skymap_nside_1024.fits.gz"
    store = SQLiteStore(tmp_path / "s.sqlite", 15)
    pipe = NoticePipeline(store, SQLiteIndex(tmp_path / "i.sqlite"), StreamFileSink(tmp_path / "out"),
                          fetcher=HttpSkymapFetcher(timeout_s=2))
    pipe.process([Message(json.dumps(doc).encode(), "gcn.notices.icecube.gold_bronze_track_alerts")])
    ev = store.event("IceCube-137840_57034692")
    assert ev["localization"]["shape"] == "circle" and ev["localization"]["radius"] == 0.5
    (notice,) = store.notices("IceCube-137840_57034692")
    assert "unreachable" in notice["metadata"]["skymap_error"]
    assert pipe.metrics.counter("skymap_downloads", outcome="failed") == 1


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ALBIREO_HOME=str(cwd / "home"), ALBIREO_MULTIMESSENGER__DOWNLOAD_SKYMAPS="false")
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_notices_ingest_list_show(shared_data, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"superevent_id": "S1", "alert_type": "NOPE", "time_created": "2024-01-01T00:00:00Z",
                               "event": None, "external_coinc": None, "urls": {}}))
    r = _cli("notices", "ingest", str(shared_data / "gcn" / "notices"), str(shared_data / "lvk"), str(bad),
             "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # 20 files: 7 GCN example notices + the 5 core schema-piece examples (rejected: no event) + 5 LVK JSON + 2 LVK XML
    # + the bad one (schema files are left out)
    assert "notices read       20" in out and "notices stored     14" in out and "rejected           6" in out
    assert "missing_field: 5" in out and "schema_invalid: 1" in out and "'NOPE' is not one of" in out
    r = _cli("notices", "list", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("7 event(s)") and "MS181101ab" in r.stdout
    r = _cli("notices", "show", "MS181101ab", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("RETRACTION") >= 2 and "retracted" in r.stdout.splitlines()[0]
    r = _cli("notices", "show", "S404", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == "Error: no event 'S404'"
    r = _cli("notices", "ingest", str(tmp_path / "home"), cwd=tmp_path)
    assert r.returncode != 0 and "Error:" in r.stderr.strip().splitlines()[-1]


def test_replay_sends_notice_files_keyed_by_event(shared_data, tmp_path):
    from broker.ops.loadgen import replay
    from broker.ports import Sink

    class Recorder(Sink):
        def __init__(self):
            self.sent = []

        def publish(self, topic, key, value, headers=None):
            self.sent.append((topic, key, value))

        def flush(self, timeout_s=30.0):
            pass

    rec = Recorder()
    stats = replay([shared_data / "lvk", shared_data / "gcn" / "notices" / "icecube"], topic="igwn.gwalert", sink=rec,
                   notices=True, progress=False)
    assert stats.messages == 7 + 2 and stats.undecodable == 0  # 5 JSON + 2 XML LVK, 2 IceCube examples; no .fits
    keys = sorted({k.decode() for _, k, _ in rec.sent})
    assert keys == ["IceCube-137840_57034692", "IceCube-LVK-S230914ak", "MS181101ab"]
    raw = {v for _, _, v in rec.sent}
    assert (shared_data / "lvk" / "MS181101ab-2-Preliminary.xml").read_bytes() in raw  # bytes sent as they are
    r = _cli("replay", str(shared_data / "lvk" / "MS181101ab-2-Preliminary.xml"), "--topic", "t", "--out",
             str(tmp_path / "n.avro-stream"), cwd=tmp_path)
    assert r.returncode == 0 and "messages=1" in r.stdout and "undecodable=0" in r.stdout


def test_multimessenger_settings_are_typed_and_validated():
    cfg = load_config(env={"ALBIREO_MULTIMESSENGER__CREDIBLE_LEVELS": "50,95",
                           "ALBIREO_MULTIMESSENGER__NEUTRINO_DAYS_AFTER": "7"})
    assert cfg.multimessenger.credible_levels == [50.0, 95.0] and cfg.multimessenger.neutrino_days_after == 7.0
    for key, value in (("CREDIBLE_LEVELS", "50,120"), ("MAX_CONTOUR_LEVEL", "0"), ("GW_DAYS_AFTER", "-1"),
                       ("NOTICE_TOPICS", ""), ("SKYMAP_TIMEOUT_S", "0"), ("CREDIBLE_LEVELS", "ninety")):
        with pytest.raises(ConfigError) as exc:
            load_config(env={f"ALBIREO_MULTIMESSENGER__{key}": value})
        assert "multimessenger." in str(exc.value)


def test_a_broken_event_record_does_not_cost_the_alerts(tmp_path, shared_data):
    """The coincidence stage skips an event it cannot use (and counts it); the batch goes through."""
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.assemble import build_pipeline
    from broker.worker import Worker

    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    cfg.filters.builtin = []
    cfg.filters.registry = False
    store = SQLiteStore(tmp_path / "s.sqlite", 15)
    store.put_event({"event_id": "BROKEN", "messenger": "neutrino", "status": "active", "event_mjd": 58000.0,
                     "localization": {"shape": "circle", "ra": 10.0, "dec": 10.0, "radius": "wide"},
                     "localization_notice_id": "x"})
    pipe = build_pipeline(cfg, store, StreamFileSink(tmp_path / "out"))
    cfg.multimessenger.neutrino_days_before = cfg.multimessenger.neutrino_days_after = 1e4
    pipe.coincidence.settings.windows["neutrino"] = (1e4, 1e4)
    s = Worker(pipe, FileSource([shared_data / "ztf" / "fink-datasim"]), batch_size=50).run()
    assert s.result.rejected_total == 0 and s.result.packets > 0
    assert pipe.metrics.counter("mm_event_errors", messenger="neutrino") >= 1
