"""Declared dependencies between filters (``REQUIRES_FILTERS``), on the devkit's real loci and real ZTF packets.

A dependent runs after what it requires, whatever the priorities say; what the earlier filter
set is on the locus when the dependent runs, in process and across the sandbox boundary; a
dependent whose dependency raised, is disabled or is not loaded is skipped on that locus with
the reason, and not charged; enabling with a missing dependency or a cycle is refused.
"""

from __future__ import annotations

import copy

import pytest
from click.testing import CliRunner

from broker.adapters.storage.sqlite import SQLiteStore
from broker.association import Associator
from broker.filtering import registry as reg
from broker.filtering.contract import code_hash, find_filter_classes, instantiate, load_filter_module
from broker.filtering.dependencies import DependencyError, topological_order
from broker.filtering.devkit import locus_from_devkit
from broker.filtering.platform import PlatformRunner, loaded_from_spec
from broker.filtering.runner import ErrorPolicy, InProcessRunner, LoadedFilter
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool
from broker.ops.samples import devkit_locus

#: runs late by priority (200), raises on loci whose id ends in "-fail".
PRODUCER = '''from antares_devkit.models import BaseFilter

class Producer(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "dep_bright", "description": "brightest alert brighter than 16 mag"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "dep_peak_mag", "type": "float", "description": "brightest magnitude"},
                               {"name": "dep_n", "type": "int", "description": "alerts seen"}]

    def _run(self, locus):
        if locus.locus_id.endswith("-fail"):
            raise RuntimeError("producer fails here on purpose")
        peak = float(locus.properties["brightest_alert_magnitude"])
        locus.set_property("dep_peak_mag", peak)
        locus.set_property("dep_n", len(locus.alerts))
        if peak < 16:
            locus.tag("dep_bright")
'''
#: runs first by priority (1) unless its declared dependency orders it after Producer.
CONSUMER = '''from antares_devkit.models import BaseFilter

class Consumer(BaseFilter):
    REQUIRES_FILTERS = ["Producer"]
    OUTPUT_LOCUS_TAGS = [{"name": "dep_confirmed", "description": "Producer said bright"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "dep_seen", "type": "float", "description": "what Producer set"}]

    def _run(self, locus):
        locus.set_property("dep_seen", locus.properties["dep_peak_mag"] + 0.0)
        if "dep_bright" in locus.tags:
            locus.tag("dep_confirmed")
'''
PRIORITIES = {"Producer": 200, "Consumer": 1}


def _loci() -> list:
    """The devkit's two real loci (3,959 and 1 alerts), a copy of each the producer fails on, untagged."""
    out = []
    for name in ("large_locus", "small_locus"):
        base = devkit_locus(name)
        for suffix in ("ok", "fail"):
            d = copy.deepcopy(base)
            d["id"] = f"{d['id']}-{suffix}"
            d["user_tags"] = set()
            out.append(locus_from_devkit(d))
    return out


def _expect(loci) -> dict[str, float]:
    """The brightest magnitude of each locus, from its own alerts (what Producer must have passed on)."""
    return {x.locus_id: min(a.mag for a in x.alerts if a.mag is not None and a.mag == a.mag) for x in loci}


def _inprocess(code: str) -> LoadedFilter:
    from broker.filtering.dependencies import declared_requires

    cls = find_filter_classes(load_filter_module(code, f"albireo_dep_test_{code_hash(code)[:8]}"))[0]
    return LoadedFilter(cls.__name__, code_hash(code)[:12], instantiate(cls), PRIORITIES[cls.__name__],
                        requires=declared_requires(cls))


def _sandboxed(code: str, name: str) -> LoadedFilter:
    return loaded_from_spec(FilterSpec(name, code_hash(code)[:12], code, PRIORITIES[name],
                                       ("Producer",) if name == "Consumer" else ()))


def _check(loci, report, consumer: LoadedFilter) -> None:
    expect = _expect(loci)
    by_id = {x.locus_id: x for x in loci}
    large_ok, large_fail, small_ok, small_fail = (x.locus_id for x in loci)
    assert expect[large_ok] < 16 < expect[small_ok]  # the real data: one bright locus, one faint
    for lid in (large_ok, small_ok):  # Producer ran first: its property and tag were on the locus for Consumer
        x = by_id[lid]
        assert x.user_properties["dep_peak_mag"] == pytest.approx(expect[lid], abs=1e-4)
        assert x.user_properties["dep_seen"] == x.user_properties["dep_peak_mag"]
        assert x.provenance["property:dep_seen"].filter == "Consumer"
    assert by_id[large_ok].user_tags == {"dep_bright", "dep_confirmed"}
    assert by_id[small_ok].user_tags == set()
    # where Producer raised, Consumer was skipped (not run, not charged) and the report says why
    assert [e.filter for e in report.errors] == ["Producer", "Producer"]
    assert {e.locus_id for e in report.errors} == {large_fail, small_fail}
    for lid in (large_fail, small_fail):
        assert "dep_seen" not in by_id[lid].user_properties
        assert report.outcomes[lid] == {"Producer": "error", "Consumer": "dependency_skipped"}
    skips = {s["locus_id"]: s for s in report.dependency_skips}
    assert set(skips) == {large_fail, small_fail}
    assert skips[large_fail]["filter"] == "Consumer" and skips[large_fail]["dependency"] == "Producer"
    assert "'Producer' raised an error on this locus" in skips[large_fail]["reason"]
    assert consumer.stats.errors == 0 and consumer.stats.runs == 2 and consumer.stats.dependency_skipped == 2


def test_topological_order_priorities_cycles_and_missing():
    nodes = [("c", 1, ["b"]), ("b", 5, ["a"]), ("a", 9, []), ("z", 0, []), ("y", 0, [])]
    assert topological_order(nodes) == ["y", "z", "a", "b", "c"]  # free filters by priority, then name
    with pytest.raises(DependencyError, match="'c' requires 'nope', which is not enabled"):
        topological_order([("c", 1, ["nope"])])
    assert topological_order([("c", 1, ["nope"])], strict=False) == ["c"]
    with pytest.raises(DependencyError, match="cycle: a -> b -> a"):
        topological_order([("a", 1, ["b"]), ("b", 2, ["a"]), ("c", 3, [])])
    with pytest.raises(DependencyError, match="requires itself"):
        topological_order([("a", 1, ["a"])])


def test_dependency_order_and_skips_in_process():
    loci = _loci()
    producer, consumer = _inprocess(PRODUCER), _inprocess(CONSUMER)
    runner = InProcessRunner([consumer, producer], max_error_rate=0)
    assert [f.name for f in runner.filters] == ["Producer", "Consumer"]  # despite priorities 200 and 1
    _check(loci, runner.run(loci), consumer)


def test_dependency_order_and_skips_across_the_sandbox_boundary():
    """Each filter in its own child: the child running Consumer receives the locus Producer's child changed."""
    loci = _loci()
    filters = [_sandboxed(CONSUMER, "Consumer"), _sandboxed(PRODUCER, "Producer")]
    with SandboxPool(filters, SandboxLimits(timeout_s=30), ErrorPolicy(max_error_rate=0)) as pool:
        assert not pool.load_errors
        assert [f.name for f in pool.filters] == ["Producer", "Consumer"]
        report = pool.run(loci)
    _check(loci, report, filters[0])


def test_a_disabled_or_absent_dependency_skips_the_dependent_with_the_reason():
    loci = _loci()[::2]  # the two loci Producer does not fail on
    producer, consumer = _inprocess(PRODUCER), _inprocess(CONSUMER)
    producer.enabled, producer.disabled_reason = False, "disabled by hand"
    report = InProcessRunner([producer, consumer], max_error_rate=0).run(loci)
    assert report.errors == [] and consumer.stats.runs == 0 and consumer.stats.dependency_skipped == 2
    assert {s["reason"] for s in report.dependency_skips} == {"dependency 'Producer' is disabled on this locus"}
    alone = _sandboxed(CONSUMER, "Consumer")
    with SandboxPool([alone], SandboxLimits(timeout_s=30), ErrorPolicy(max_error_rate=0)) as pool:
        report = pool.run(_loci()[::2])
    assert report.errors == [] and alone.stats.runs == 0 and alone.stats.dependency_skipped == 2
    assert "did not run on this locus" in report.dependency_skips[0]["reason"]


def test_registry_refuses_missing_dependencies_and_cycles_and_the_platform_orders(tmp_path):
    store = SQLiteStore(tmp_path / "deps.sqlite", Associator(1.0).order)
    consumer = reg.add_revision(store, CONSUMER, "alice", priority=1, approved_by="olga")
    assert consumer["requires"] == ["Producer"] and consumer["meta"]["REQUIRES_FILTERS"] == ["Producer"]
    with pytest.raises(reg.DependencyError, match="'Consumer' requires 'Producer', which is not enabled"):
        reg.set_status(store, "Consumer", "enabled")
    reg.add_revision(store, PRODUCER, "bob", priority=200, approved_by="olga", enable=True)
    reg.set_status(store, "Consumer", "enabled")
    assert [s.name for s in reg.enabled_specs(store)] == ["Producer", "Consumer"]
    # a new Producer revision that requires Consumer would close a cycle: refused, the old one stays
    cyclic = PRODUCER.replace("class Producer(BaseFilter):\n", "class Producer(BaseFilter):\n"
                              "    REQUIRES_FILTERS = ['Consumer']\n")
    rev = reg.add_revision(store, cyclic, "bob", priority=200, approved_by="olga")
    with pytest.raises(reg.DependencyError, match="cycle: Consumer -> Producer -> Consumer"):
        reg.set_status(store, "Producer", "enabled", rev["revision"])
    assert {s.name: s.revision for s in reg.enabled_specs(store)}["Producer"] != rev["revision"]
    with pytest.raises(reg.FilterRejected, match="REQUIRES_FILTERS must be a list of filter names"):
        reg.add_revision(store, CONSUMER.replace('["Producer"]', '"Producer"'), "x")
    # the worker's runner reads the registry, orders by the declarations and skips where Producer failed
    runner = PlatformRunner([], revisions=lambda: reg.enabled_specs(store), limits=SandboxLimits(timeout_s=30),
                            policy=ErrorPolicy(max_error_rate=0), refresh_s=0)
    try:
        runner.prepare()
        loci = _loci()
        report = runner.run(loci)
        _check(loci, report, next(f for f in runner.filters if f.name == "Consumer"))
    finally:
        runner.close()
        store.close()


def test_cli_enable_refuses_a_missing_dependency(tmp_path, monkeypatch):
    from broker.cli import main

    monkeypatch.setenv("ALBIREO_STORE__PATH", str(tmp_path / "cli.sqlite"))
    (tmp_path / "consumer.py").write_text(CONSUMER)
    cli = CliRunner()
    r = cli.invoke(main, ["filter", "add", str(tmp_path / "consumer.py"), "--approve", "--by", "olga", "--enable"])
    assert r.exit_code == 1 and "requires 'Producer', which is not enabled" in r.output, r.output
    r = cli.invoke(main, ["filter", "show", "Consumer"])
    assert "requires: Producer" in r.output and "review: approved by olga" in r.output


AFTER_SNR = '''from antares_devkit.models import BaseFilter

class AfterSnr(BaseFilter):
    REQUIRES_FILTERS = ["high_snr"]
    OUTPUT_LOCUS_TAGS = [{"name": "after_snr", "description": "high_snr said so first"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "dep_snr_copy", "type": "float", "description": "high_snr's S/N"},
                               {"name": "dep_snr_alert", "type": "str", "description": "the alert it was for"}]

    def _run(self, locus):
        locus.set_property("dep_snr_copy", locus.properties["newest_alert_snr"])
        locus.set_property("dep_snr_alert", str(locus.alert.id))
        if "high_snr" in locus.tags:
            locus.tag("after_snr")
'''


def test_a_sandboxed_filter_after_a_builtin_in_the_pipeline_on_real_ztf(tmp_path, shared_data):
    """The worker on ../shared/data: a user filter (priority -5) that requires the built-in high_snr runs
    after it on every packet, in the sandbox, and reads the S/N high_snr set for that very alert."""
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.assemble import build_filters, build_pipeline
    from broker.config import Config
    from broker.worker import Worker

    cfg = Config()
    cfg.store.path = str(tmp_path / "albireo.sqlite")
    cfg.catalogs.enabled = False
    cfg.filters.refresh_s = 0.0
    store = SQLiteStore(cfg.store.path, Associator(1.0).order)
    with pytest.raises(reg.DependencyError, match="requires 'high_snr'"):
        reg.add_revision(store, AFTER_SNR, "alice", priority=-5, approved_by="olga", enable=True)
    reg.add_revision(store, AFTER_SNR, "alice", priority=-5, approved_by="olga", enable=True, known=cfg.filters.builtin)
    runner = build_filters(cfg, store=store)
    worker = Worker(build_pipeline(cfg, store, StreamFileSink(tmp_path / "streams"), filters=runner),
                    FileSource([shared_data / "ztf"]), batch_size=20)
    try:
        worker.run(max_messages=60)
        order = [f.name for f in runner.filters]
        assert order.index("AfterSnr") == order.index("high_snr") + 1
        after = next(f for f in runner.filters if f.name == "AfterSnr")
        assert after.stats.runs > 20 and after.stats.errors == 0
    finally:
        runner.close()
    loci = [x for batch in store.iter_loci() for x in batch]
    ran = [x for x in loci if "dep_snr_copy" in x.user_properties]
    assert len(ran) > 10
    for x in ran:
        assert x.user_properties["dep_snr_copy"] == x.user_properties["newest_alert_snr"]
        assert ("after_snr" in x.user_tags) == ("high_snr" in x.user_tags)
    assert any("after_snr" in x.user_tags for x in ran)
    newest = {x.locus_id: x.alerts[-1].alert_id for x in ran}
    assert sum(x.user_properties["dep_snr_alert"] == newest[x.locus_id] for x in ran) >= len(ran) // 2
    # a backfill runs the one filter on the loci as stored: high_snr's results are read from the store
    rep = reg.backfill_filter(store, "AfterSnr", limits=SandboxLimits(timeout_s=30))
    assert rep["dependency_skipped"] == 0 and rep["runs"] == len(loci)
    assert rep["error_count"] == sum("newest_alert_snr" not in x.user_properties for x in loci)
    assert rep["tags"].get("after_snr", 0) == 0  # already tagged where high_snr is: nothing new
    store.close()
