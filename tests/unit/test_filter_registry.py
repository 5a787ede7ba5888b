"""The registry, the worker running registered filters (hostile ones included), the CLI and the webhook.

Everything runs on the embedded SQLite store and real ZTF packets from ../shared/data.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink
from broker.assemble import build_filters, build_pipeline
from broker.association import Associator
from broker.config import Config
from broker.filtering import registry as reg
from broker.ops.samples import shared_ztf_dir
from broker.worker import Worker
from tests.unit.test_filter_sandbox import GOOD, HOSTILE, filter_code

ZTF = shared_ztf_dir()
pytestmark = pytest.mark.shared_data

LATE = filter_code("Late", "        locus.tag('late')", tag="late")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()


def _cfg(tmp: Path, url: str = "") -> Config:
    cfg = Config()
    cfg.store.path = str(tmp / "albireo.sqlite")
    cfg.catalogs.enabled = False
    cfg.filters.min_runs = 2  # judge the error rate after two runs
    cfg.filters.max_mean_s = 0.0
    cfg.filters.timeout_s = 1.0
    cfg.filters.webhook_url = url
    cfg.filters.refresh_s = 0.0  # re-read the registry before every batch
    return cfg


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory, webhook):
    """A worker ingesting real packets while good and hostile filters are registered and enabled."""
    url, received = webhook
    tmp = tmp_path_factory.mktemp("registry")
    cfg = _cfg(tmp, url)
    store = SQLiteStore(cfg.store.path, Associator(1.0).order)
    reg.add_revision(store, GOOD, "alice", approved_by="operator", enable=True)
    for name in ("Raiser", "Segv", "Looper", "Netter"):
        reg.add_revision(store, HOSTILE[name][0], "mallory", approved_by="operator", enable=True)
    runner = build_filters(cfg, store=store)
    pipeline = build_pipeline(cfg, store, StreamFileSink(tmp / "streams"), filters=runner)
    worker = Worker(pipeline, FileSource([ZTF]), batch_size=8)
    first = worker.run(max_messages=24)
    # a new filter registered while the worker runs is picked up at the next batch, no restart
    reg.add_revision(store, LATE, "bob", approved_by="operator", enable=True)
    second = worker.run()
    yield {"store": store, "runner": runner, "first": first, "second": second, "received": received, "cfg": cfg,
           "tmp": tmp}
    runner.close()
    store.close()


def test_worker_keeps_processing_while_hostile_filters_fail(worker_run):
    first, second, store = worker_run["first"], worker_run["second"], worker_run["store"]
    assert first.result.packets + second.result.packets >= 50
    assert store.counts()["loci"] > 40
    # the good filter tagged in both runs, after the hostile ones crashed, hung and were disabled
    assert first.result.tags["good"] > 0 and second.result.tags["good"] > 0
    assert first.result.filter_errors >= 8  # 2 failed runs each before the automatic disable
    for name in ("Raiser", "Segv", "Looper", "Netter"):
        rec = reg.get_filter(store, name)["revisions"][-1]
        assert rec["status"] == "disabled", name
        assert "failed 2 of its last 2 runs" in rec["status_reason"], rec["status_reason"]
    assert reg.get_filter(store, "Good")["revisions"][-1]["status"] == "enabled"


def test_new_revision_is_picked_up_without_restart(worker_run):
    assert "late" not in worker_run["first"].result.tags
    assert worker_run["second"].result.tags["late"] > 0


def test_stored_tags_name_the_filter_revision_and_pipeline_version(worker_run):
    import broker

    store = worker_run["store"]
    good_rev = reg.get_filter(store, "Good")["enabled_revision"]
    loci = [x for batch in store.iter_loci() for x in batch]
    tagged = [x for x in loci if "good" in x.user_tags]
    assert tagged
    for x in tagged:
        assert (x.provenance["good"].filter, x.provenance["good"].revision) == ("Good", good_rev)
        assert x.provenance["good"].pipeline_version == broker.__version__
        assert x.provenance["property:good_n"].revision == good_rev


def test_webhook_gets_slack_compatible_messages(worker_run):
    import time

    received = worker_run["received"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(m.get("event") == "disabled" for m in received):
        time.sleep(0.1)
    assert all(isinstance(m["text"], str) and m["text"] for m in received)
    errors = {m["filter"] for m in received if m["event"] == "error"}
    disabled = {m["filter"] for m in received if m["event"] == "disabled"}
    assert {"Raiser", "Segv", "Looper", "Netter"} <= errors
    assert {"Raiser", "Segv", "Looper", "Netter"} <= disabled
    raiser = next(m for m in received if m["filter"] == "Raiser" and m["event"] == "error")
    assert "ValueError: boom on purpose" in raiser["text"]


def test_registry_revisions_and_status(tmp_path):
    store = SQLiteStore(tmp_path / "r.sqlite", Associator(1.0).order)
    a = reg.add_revision(store, GOOD, "alice")
    assert (a["status"], a["author"], a["revision"]) == ("submitted", "alice", a["hash"][:12])
    assert reg.add_revision(store, GOOD, "alice")["revision"] == a["revision"]  # same code, same revision
    b = reg.add_revision(store, GOOD + "\n# v2\n", "alice")
    assert b["revision"] != a["revision"]
    # the review step: nobody approved it, so it cannot be enabled
    with pytest.raises(reg.NotApproved, match=r"has not been approved.*albireo filter approve Good"):
        reg.set_status(store, "Good", "enabled", a["revision"])
    assert reg.enabled_specs(store) == []
    approved = reg.review(store, "Good", "approved", "olga", a["revision"], "read the code")
    assert approved["status"] == "approved" and approved["review"]["by"] == "olga"
    assert approved["review"]["decision"] == "approved" and approved["review"]["note"] == "read the code"
    assert approved["review"]["at"] >= a["created"]
    with pytest.raises(ValueError, match="needs a reason"):
        reg.review(store, "Good", "rejected", "olga", b["revision"])
    rejected = reg.review(store, "Good", "rejected", "olga", b["revision"], "prints secrets")
    assert rejected["status"] == "rejected"
    with pytest.raises(reg.NotApproved, match="rejected by olga \\(prints secrets\\)"):
        reg.set_status(store, "Good", "enabled", b["revision"])
    # without the review requirement an unapproved revision may be enabled, a rejected one still not
    with pytest.raises(reg.NotApproved):
        reg.set_status(store, "Good", "enabled", b["revision"], require_review=False)
    reg.review(store, "Good", "approved", "pavel", b["revision"], "fixed after all")
    history = reg.get_filter(store, "Good")["revisions"][1]["meta"]["review_history"]
    assert [h["decision"] for h in history] == ["rejected", "approved"]
    reg.set_status(store, "Good", "enabled", a["revision"])
    reg.set_status(store, "Good", "enabled", b["revision"])
    revs = {r["revision"]: r for r in reg.get_filter(store, "Good")["revisions"]}
    assert revs[a["revision"]]["status"] == "disabled" and revs[b["revision"]]["status"] == "enabled"
    assert [s.revision for s in reg.enabled_specs(store)] == [b["revision"]]
    missing = reg.add_revision(store, "import not_a_real_package_xyz\n" + filter_code("Missing", "        pass"), "x")
    assert "missing dependency 'not_a_real_package_xyz'" in missing["meta"]["load_error"]
    with pytest.raises(ValueError, match="cannot be enabled: .*not_a_real_package_xyz"):
        reg.set_status(store, "Missing", "enabled")
    with pytest.raises(reg.FilterRejected, match="syntax error at line 1"):
        reg.add_revision(store, "class X(:\n", "x")
    rows = {r["name"]: r for r in reg.list_filters(store)}
    assert rows["Good"]["enabled_revision"] == b["revision"] and rows["Good"]["revisions"] == 2
    assert rows["Missing"]["load_error"]
    reg.set_status(store, "Good", "disabled")
    assert reg.enabled_specs(store) == []
    store.close()


def test_replay_is_a_dry_run_reporting_what_would_be_tagged(worker_run):
    store = worker_run["store"]
    replayed = filter_code("Replayed", "        if locus.alert.properties.get('ant_survey') == 1:\n"
                           "            locus.tag('replayed')", tag="replayed")
    reg.add_revision(store, replayed, "carol")
    loci = [x for batch in store.iter_loci() for x in batch]
    expect = sum(1 for x in loci if x.alert.properties.get("ant_survey") == 1)
    rep = reg.backfill_filter(store, "Replayed")
    assert rep["dry_run"] and rep["loci"] == len(loci)
    assert rep["tags"] == {"replayed": expect} and expect > 0
    assert not any("replayed" in x.user_tags for batch in store.iter_loci() for x in batch)
    # a window that contains no locus
    assert reg.backfill_filter(store, "Replayed", since="2100-01-01")["loci"] == 0


def test_cli_add_list_show_enable_disable_test(tmp_path, monkeypatch):
    from broker.cli import main

    monkeypatch.setenv("ALBIREO_STORE__PATH", str(tmp_path / "cli.sqlite"))
    good = tmp_path / "good.py"
    good.write_text(GOOD)
    cli = CliRunner()
    r = cli.invoke(main, ["filter", "add", str(good), "--author", "alice"])
    assert r.exit_code == 0, r.output
    assert "Good@" in r.output and "submitted" in r.output
    r = cli.invoke(main, ["filter", "enable", "Good"])
    assert r.exit_code == 1 and "has not been approved" in r.output
    r = cli.invoke(main, ["filter", "approve", "Good", "--by", "olga", "--note", "looked fine"])
    assert r.exit_code == 0 and "approved by olga" in r.output, r.output
    r = cli.invoke(main, ["filter", "show", "Good"])
    assert "review: approved by olga" in r.output and "(looked fine)" in r.output
    assert cli.invoke(main, ["filter", "enable", "Good"]).exit_code == 0
    r = cli.invoke(main, ["filter", "list"])
    assert "Good" in r.output and "enabled" in r.output
    r = cli.invoke(main, ["filter", "show", "Good", "--json"])
    assert json.loads(r.output)["revisions"][0]["author"] == "alice"
    assert "disabled" in cli.invoke(main, ["filter", "disable", "Good"]).output
    r = cli.invoke(main, ["filter", "test", str(good), "--alerts", str(ZTF / "fink-datasim")])
    assert r.exit_code == 0, r.output
    assert "good=" in r.output and "errors 0" in r.output
    bad = tmp_path / "bad.py"
    bad.write_text(HOSTILE["Raiser"][0])
    r = cli.invoke(main, ["filter", "test", str(bad), "--alerts", str(ZTF / "fink-datasim")])
    assert "ERROR ValueError: boom on purpose" in r.output
    r = cli.invoke(main, ["filter", "backfill", "Good"])
    assert r.exit_code == 0 and "dry run" in r.output


def test_per_filter_counters_and_latency_histogram(worker_run):
    from broker.metrics import Metrics

    runner = worker_run["runner"]
    by_name = {f.name: f for f in [*runner.filters, *runner.retired.values()]}
    good, raiser = by_name["Good"], by_name["Raiser"]
    assert good.stats.runs > 0 and sum(good.stats.histogram) == good.stats.runs
    assert raiser.stats.errors >= 2 and not raiser.enabled
    assert by_name["Segv"].stats.crashes >= 1 and by_name["Looper"].stats.timeouts >= 1
    m = Metrics()
    runner.export_metrics(m)
    text = m.render()
    assert f'albireo_filter_stats_errors{{filter="Raiser",revision="{raiser.revision}"}} {float(raiser.stats.errors)}' in text
    assert f'albireo_filter_stats_enabled{{filter="Good",revision="{good.revision}"}} 1.0' in text


def test_cli_review_flow_add_enable_reject_and_require_review_off(tmp_path, monkeypatch):
    from broker.cli import main

    monkeypatch.setenv("ALBIREO_STORE__PATH", str(tmp_path / "review.sqlite"))
    good = tmp_path / "good.py"
    good.write_text(GOOD)
    cli = CliRunner()
    r = cli.invoke(main, ["filter", "add", str(good), "--enable"])
    assert r.exit_code == 1 and "has not been approved" in r.output, r.output
    r = cli.invoke(main, ["filter", "add", str(good), "--approve"])
    assert r.exit_code == 2 and "--approve needs --by" in r.output
    r = cli.invoke(main, ["filter", "list"])
    assert "submitted" in r.output and "review=pending" in r.output
    r = cli.invoke(main, ["filter", "add", str(good), "--approve", "--by", "olga", "--enable", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["status"] == "enabled" and rec["review"]["by"] == "olga" and rec["review"]["decision"] == "approved"
    # rejecting the enabled revision takes it out of what workers load
    r = cli.invoke(main, ["filter", "reject", "Good", "--by", "pavel"])
    assert r.exit_code == 2 and "--reason" in r.output
    r = cli.invoke(main, ["filter", "reject", "Good", "--by", "pavel", "--reason", "leaks memory"])
    assert r.exit_code == 0 and "rejected by pavel" in r.output, r.output
    store = SQLiteStore(tmp_path / "review.sqlite", Associator(1.0).order)
    assert reg.enabled_specs(store) == []
    store.close()
    r = cli.invoke(main, ["filter", "enable", "Good"])
    assert r.exit_code == 1 and "rejected by pavel (leaks memory)" in r.output
    # with the review requirement off, a fresh unreviewed revision may be enabled
    other = tmp_path / "other.py"
    other.write_text(filter_code("Other", "        pass"))
    monkeypatch.setenv("ALBIREO_FILTERS__REQUIRE_REVIEW", "false")
    r = cli.invoke(main, ["filter", "add", str(other), "--enable"])
    assert r.exit_code == 0 and "status=enabled" in r.output, r.output
