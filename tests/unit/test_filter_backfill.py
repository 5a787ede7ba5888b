"""Backfills that compare, write, publish and resume, on a store of real ZTF packets from ../shared/data.

The expected tags and properties are computed from the stored loci themselves (their alert
counts), not written down; an interrupted-then-resumed run is compared with an uninterrupted run
of the same revision on a copy of the same store: same store contents, same stream messages, none
twice.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import StreamFileSink, iter_stream_file
from broker.assemble import embedded_worker, open_index, open_index_writer
from broker.config import Config
from broker.emit import StreamRouter, decode_locus_message
from broker.filtering import registry as reg
from broker.filtering.sandbox import SandboxLimits
from broker.ops.samples import shared_ztf_dir

ZTF = shared_ztf_dir()
pytestmark = pytest.mark.shared_data

REV_A = '''from antares_devkit.models import BaseFilter

class BfCount(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "bf_multi", "description": "more than 12 alerts"},
                         {"name": "bf_big", "description": "more than 25 alerts"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "bf_n", "type": "int", "description": "alerts"},
                               {"name": "bf_b", "type": "int", "description": "set by B only"}]

    def _run(self, locus):
        n = len(locus.alerts)
        locus.set_property("bf_n", n)
        if n > 12:
            locus.tag("bf_multi")
'''
# B: tags only above 13 alerts (loses bf_multi at exactly 13), adds bf_big above 25 (gains it),
# changes bf_n above 20 and sets bf_b everywhere.
REV_B = REV_A.replace('''        n = len(locus.alerts)
        locus.set_property("bf_n", n)
        if n > 12:
            locus.tag("bf_multi")''', '''        n = len(locus.alerts)
        locus.set_property("bf_n", n + 1 if n > 20 else n)
        locus.set_property("bf_b", 1)
        if n > 13:
            locus.tag("bf_multi")
        if n > 25:
            locus.tag("bf_big")''')
LIMITS = SandboxLimits(timeout_s=30)


def _cfg(tmp: Path) -> Config:
    cfg = Config()
    cfg.store.path = str(tmp / "albireo.sqlite")
    cfg.search.backend, cfg.search.path, cfg.search.outbox_path = "sqlite", str(tmp / "index.sqlite"), ""
    cfg.catalogs.enabled = False
    cfg.filters.registry = False
    return cfg


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A store and index of real ZTF packets (built-in filters only), with both revisions registered."""
    tmp = tmp_path_factory.mktemp("backfill")
    cfg = _cfg(tmp)
    with embedded_worker(cfg, [ZTF], tmp / "streams", batch_size=50) as assembly:
        assembly.worker.run(max_messages=120)
    store = SQLiteStore(cfg.store.path, 15)
    reg.add_revision(store, REV_A, "alice", limits=LIMITS)
    reg.add_revision(store, REV_B, "alice", limits=LIMITS)
    store.close()
    return tmp


@pytest.fixture()
def copy(ingested, tmp_path):
    """A private copy of the ingested store and index, and its config."""
    for f in ("albireo.sqlite", "index.sqlite"):
        shutil.copy(ingested / f, tmp_path / f)
    cfg = _cfg(tmp_path)
    store = SQLiteStore(cfg.store.path, 15)
    yield cfg, store
    store.close()


def _revs(store) -> tuple[str, str]:
    a, b = (r["revision"] for r in store.list_filter_revisions("BfCount"))
    return a, b


def _counts(store) -> dict[str, int]:
    return {x.locus_id: len(x.alerts) for batch in store.iter_loci() for x in batch}


def _stream_messages(folder: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(folder.glob("*.avro-stream")):
        for raw in iter_stream_file(path):
            out.append((path.name.removesuffix(".avro-stream"), decode_locus_message(raw)["locus_id"]))
    return out


def _state(store) -> dict[str, tuple]:
    """What a backfill wrote, without run ids and times: tags, bf_* properties, provenance filter/revision."""
    out = {}
    for batch in store.iter_loci():
        for x in batch:
            out[x.locus_id] = (sorted(t for t in x.user_tags if t.startswith("bf_")),
                               sorted((k, v) for k, v in x.user_properties.items() if k.startswith("bf_")),
                               sorted((k, p.filter, p.revision) for k, p in x.provenance.items() if "bf_" in k))
    return out


def test_compare_two_revisions_tags_gained_lost_and_property_changes(copy):
    cfg, store = copy
    a, b = _revs(store)
    n = _counts(store)
    assert any(v == 13 for v in n.values()) and any(v > 25 for v in n.values()), "the data must exercise every rule"
    rep = reg.compare_revisions(store, "BfCount", a, b, limits=LIMITS, batch_size=17)
    t = rep["totals"]
    assert t["loci"] == len(n)
    assert t["tags_lost"] == {"bf_multi": sum(v == 13 for v in n.values())}
    assert t["tags_gained"] == {"bf_big": sum(v > 25 for v in n.values())}
    assert t["properties_changed"] == {"bf_b": len(n), "bf_n": sum(v > 20 for v in n.values())}
    assert t["loci_differing"] == len(n)  # bf_b differs everywhere
    by_id = {c["locus_id"]: c for c in rep["per_locus"]}
    lid = next(i for i in by_id if n[i] > 25)
    assert by_id[lid]["properties_changed"]["bf_n"] == {"a": n[lid], "b": n[lid] + 1}
    assert by_id[lid]["properties_changed"]["bf_b"] == {"a": None, "b": 1} and by_id[lid]["tags_gained"] == ["bf_big"]
    assert rep["errors"][a]["count"] == 0 and rep["errors"][b]["count"] == 0
    assert not any("bf_multi" in x.user_tags for batch in store.iter_loci() for x in batch)  # nothing written


def test_write_stores_tags_and_properties_with_provenance_and_indexes_them(copy):
    cfg, store = copy
    a, _ = _revs(store)
    n = _counts(store)
    writer = open_index_writer(cfg)
    rep = reg.run_backfill(store, "BfCount", a, limits=LIMITS, index_writer=writer, batch_size=25)
    assert writer.close(timeout=60)
    multi = {lid for lid, v in n.items() if v > 12}
    assert rep["status"] == "done" and rep["totals"]["loci"] == len(n) and rep["totals"]["errors"] == 0
    assert rep["totals"]["tags_written"] == {"bf_multi": len(multi)}
    assert rep["totals"]["properties_written"] == {"bf_n": len(n)}
    for batch in store.iter_loci():
        for x in batch:
            assert ("bf_multi" in x.user_tags) == (x.locus_id in multi)
            assert x.user_properties["bf_n"] == n[x.locus_id]
            p = x.provenance["property:bf_n"]
            assert (p.filter, p.revision, p.backfill_run) == ("BfCount", a, rep["run_id"]) and p.set_at > 0
    index = open_index(cfg)
    try:
        assert index.tag_counts().get("bf_multi") == len(multi)
    finally:
        index.close()
    run = store.get_backfill_run(rep["run_id"])
    assert run["status"] == "done" and run["position"] == len(n) and run["last_locus_id"] == max(n)
    # idempotent: the same revision again writes and publishes nothing
    again = reg.run_backfill(store, "BfCount", a, limits=LIMITS, sink=StreamFileSink(cfg.store.path + ".s"))
    assert again["totals"]["loci_changed"] == 0 and again["totals"]["published"] == 0


@pytest.mark.parametrize("point", ["after_publish", "after_write"])
def test_interrupted_and_resumed_equals_uninterrupted_no_duplicates(ingested, tmp_path, point):
    def private(name: str) -> tuple[Config, SQLiteStore]:
        d = tmp_path / name
        d.mkdir()
        for f in ("albireo.sqlite", "index.sqlite"):
            shutil.copy(ingested / f, d / f)
        cfg = _cfg(d)
        return cfg, SQLiteStore(cfg.store.path, 15)

    _, whole = private("whole")
    _, cut = private("cut")
    a, _ = _revs(whole)
    router = StreamRouter()
    ref = reg.run_backfill(whole, "BfCount", a, limits=LIMITS, sink=StreamFileSink(tmp_path / "whole-streams"),
                           router=router, batch_size=10)
    expected_msgs = _stream_messages(tmp_path / "whole-streams")
    assert ref["totals"]["published"] == len(expected_msgs) > 10  # more than one batch published

    def interrupt(p: str, batch: int) -> None:
        if p == point and batch == 2:
            raise KeyboardInterrupt

    sink = StreamFileSink(tmp_path / "cut-streams")
    with pytest.raises(KeyboardInterrupt):
        reg.run_backfill(cut, "BfCount", a, limits=LIMITS, sink=sink, router=router, batch_size=10, hook=interrupt)
    (run,) = cut.list_backfill_runs("BfCount")
    assert run["status"] == "interrupted" and run["position"] == 20  # two batches finished, the third not
    done = reg.run_backfill(cut, "BfCount", None, limits=LIMITS, sink=sink, router=router, resume=run["run_id"],
                            batch_size=10)
    assert done["status"] == "done" and done["run_id"] == run["run_id"] and done["resumed"]
    got = _stream_messages(tmp_path / "cut-streams")
    assert Counter(got) == Counter(expected_msgs)
    assert max(Counter(got).values()) == 1  # no locus twice on a stream
    assert _state(cut) == _state(whole)
    assert done["totals"]["tags_written"] == ref["totals"]["tags_written"]
    assert done["totals"]["published"] == ref["totals"]["published"]  # counted once, sent once
    assert done["totals"]["loci"] == ref["totals"]["loci"]
    # resuming a finished run does nothing
    assert reg.run_backfill(cut, "BfCount", resume=run["run_id"], sink=sink)["nothing_to_do"]
    whole.close()
    cut.close()


def test_cli_compare_write_publish_resume(copy, tmp_path, monkeypatch):
    from broker.cli import main

    cfg, store = copy
    a, b = _revs(store)
    n = _counts(store)
    monkeypatch.setenv("ALBIREO_STORE__PATH", cfg.store.path)
    monkeypatch.setenv("ALBIREO_SEARCH__BACKEND", "sqlite")
    monkeypatch.setenv("ALBIREO_SEARCH__PATH", cfg.search.path)
    cli = CliRunner()
    r = cli.invoke(main, ["filter", "backfill", "BfCount", "--publish"])
    assert r.exit_code == 2 and "--publish needs --write" in r.output
    r = cli.invoke(main, ["filter", "backfill", "BfCount", "--compare", a, b])
    assert r.exit_code == 0, r.output
    assert f"tags lost: bf_multi={sum(v == 13 for v in n.values())}" in r.output
    r = cli.invoke(main, ["filter", "backfill", "BfCount", "--revision", b, "--against", a, "--json"])
    assert r.exit_code == 0 and '"revision_a": "' + a in r.output
    # an interrupted run (by a limit on this call's side: a hook stops it), then resumed from the CLI
    with pytest.raises(KeyboardInterrupt):
        reg.run_backfill(store, "BfCount", a, limits=LIMITS, batch_size=5,
                         sink=StreamFileSink(tmp_path / "s"), publish_to=f"files:{tmp_path / 's'}",
                         hook=lambda p, k: (_ for _ in ()).throw(
                             KeyboardInterrupt) if (p, k) == ("after_write", 1) else None)
    (run,) = store.list_backfill_runs("BfCount")
    # the checkpoint says where it published: the resume publishes there again without being told
    r = cli.invoke(main, ["filter", "backfill", "BfCount", "--resume", run["run_id"]])
    assert r.exit_code == 0, r.output
    assert f"backfill run {run['run_id']}: BfCount@{a} done (resumed)" in r.output
    multi = sum(v > 12 for v in n.values())
    assert f"tags written: bf_multi={multi}" in r.output
    msgs = _stream_messages(tmp_path / "s")
    assert len(msgs) == len(set(msgs)) == multi
    r = cli.invoke(main, ["filter", "backfill", "BfCount", "--write", "--revision", b, "--json"])
    assert r.exit_code == 0, r.output
    assert sum(v > 25 for v in n.values()) == sum("bf_big" in x.user_tags for batch in store.iter_loci()
                                                  for x in batch)
