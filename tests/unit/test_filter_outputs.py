"""What a filter returns is checked at the boundary, and bad data cannot switch a filter off for everyone.

Two defects of issue 11: a filter could push valid packets into the dead-letter queue (a property
no JSON carries, a malformed provenance, a tag that breaks the file sink), and 50 packets with
``sigmapsf = 1e-40`` made the built-in ``high_snr`` raise 50 times and be disabled for the whole
worker. Here the filter, never the data, is charged, and auto-disable judges a rate (and an
aggregate time budget), not a count.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import fastavro
import pytest

from broker.adapters.streams.files import InvalidTopic, StreamFileSink
from broker.filtering.contract import BaseFilter
from broker.filtering.platform import PlatformRunner
from broker.filtering.runner import ErrorPolicy, InProcessRunner, load_builtin_filters, load_filter_class
from broker.filtering.sandbox import SandboxLimits, SandboxPool
from broker.worker import is_transient
from tests.unit.test_filter_sandbox import GOOD, _loci, filter_code, spec
from tests.unit.test_pipeline import _messages, _setup

LONG_TAG = "x" * 300


def _bad_outputs_code() -> str:
    body = ("        locus.tag('a/b')\n"
            f"        locus.tag({LONG_TAG!r})\n"
            "        locus.tag('undeclared')\n"
            "        locus.tag('ok_tag')\n"
            "        locus.user_properties['blob'] = [1, 2, 3]\n"
            "        locus.provenance['property:blob'] = locus._current\n"
            "        locus.set_property('num_alerts', 1)\n"
            "        locus.set_property('fine', 2.5)\n")
    code = filter_code("BadOutputs", body, tag="ok_tag")
    # declare the unusable names too: declaring them does not make them streams
    return code.replace('OUTPUT_LOCUS_TAGS = [{"name": "ok_tag", "description": "test"}]',
                        f'OUTPUT_LOCUS_TAGS = [{{"name": n, "description": "d"}} for n in '
                        f'("ok_tag", "a/b", {LONG_TAG!r})]')


def _ztf_packets(shared_data: Path, out: Path, n: int, **candidate) -> Path:
    """``n`` distinct packets (own candid, object, position) made from one real ZTF packet, ``candidate`` set."""
    src = sorted((shared_data / "ztf" / "fink-datasim").glob("*.avro"))[0]
    with open(src, "rb") as fh:
        reader = fastavro.reader(fh)
        schema = reader.writer_schema
        rec = next(reader)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        r = copy.deepcopy(rec)
        r["candid"] = r["candidate"]["candid"] = rec["candid"] + 1000 + i
        r["objectId"] = f"ZTF24test{i:04d}"
        r["candidate"]["ra"] = (rec["candidate"]["ra"] + 0.01 * (i + 1)) % 360
        r["candidate"].update(candidate)
        r["prv_candidates"] = None
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [r])
        (out / f"{i:04d}.avro").write_bytes(buf.getvalue())
    return out


def test_sigmapsf_1e_minus_40_does_not_make_high_snr_fail(tmp_path, shared_data):
    """The attack of the issue, through the pipeline: 50 such packets, the built-ins as production runs them."""
    bad = _ztf_packets(shared_data, tmp_path / "bad", 50, sigmapsf=1e-40)
    builtins = load_builtin_filters(["high_snr", "fast_riser", "nearby_galaxy"])
    runner = PlatformRunner(builtins, policy=ErrorPolicy())  # the production defaults
    _, store, _, pipe = _setup(tmp_path, filters=runner)
    res = pipe.process(_messages([bad]) + _messages([shared_data / "ztf" / "fink-datasim"]))
    high_snr = next(f for f in builtins if f.name == "high_snr")
    assert res.packets >= 50 + 30 and res.rejected_total == 0
    assert high_snr.enabled and high_snr.stats.errors == 0 and res.filter_errors == 0
    assert high_snr.stats.runs >= 80  # it ran on the bad packets and on the real ones after them
    snr = [x.user_properties.get("newest_alert_snr") for b in store.iter_loci() for x in b]
    assert sum(v is not None for v in snr) >= 30  # and still measures the real detections
    store.close()


class _FailsOnFlagged(BaseFilter):
    """Raises on loci whose newest alert carries a flag, as a filter meeting odd data would."""

    OUTPUT_LOCUS_TAGS = [{"name": "seen_ok", "description": ""}]

    def _run(self, locus):
        if locus.alert.properties.get("odd"):
            raise ValueError("odd packet")
        locus.tag("seen_ok")


def _flagged_loci(n: int, odd: set[int]):
    loci = _loci(n)
    for i, x in enumerate(loci):
        x.alert.properties["odd"] = i in odd
    return loci


def test_a_burst_of_odd_packets_does_not_disable_a_filter_but_a_broken_filter_is_disabled():
    f = load_filter_class(_FailsOnFlagged)
    runner = InProcessRunner([f], policy=ErrorPolicy())  # rate 0.5 over 1000 runs, judged after 200
    runner.run(_flagged_loci(300, odd=set(range(50))))  # 50 odd packets first, then ordinary ones
    assert f.enabled and f.stats.errors == 50 and f.stats.runs == 300
    broken = load_filter_class(_FailsOnFlagged)
    runner = InProcessRunner([broken], policy=ErrorPolicy())
    runner.run(_flagged_loci(250, odd=set(range(250))))
    assert not broken.enabled and broken.stats.runs == 200  # judged once 200 runs were seen
    assert "failed 200 of its last 200 runs (100%" in broken.disabled_reason


class _Slow(BaseFilter):
    OUTPUT_LOCUS_TAGS = []

    def _run(self, locus):
        import time

        time.sleep(0.05)


def test_a_filter_just_under_the_per_locus_limit_everywhere_is_charged_and_disabled():
    disabled = []
    f = load_filter_class(_Slow)
    policy = ErrorPolicy(max_error_rate=0.5, window_runs=5, min_runs=3, max_mean_s=0.01,
                         on_disable=lambda lf, err: disabled.append(err))
    runner = InProcessRunner([f], slow_s=1.0, enforce_budget=True, policy=policy)
    report = runner.run(_loci(5))
    assert f.stats.timeouts == 0  # never over the per-locus budget ...
    assert not f.enabled and f.stats.runs == 3  # ... but over the aggregate one
    assert "per locus on average over its last 3 runs" in f.disabled_reason
    assert [e.exception for e in report.errors] == ["FilterTooSlow"] and disabled[0].exception == "FilterTooSlow"


def test_a_sandboxed_slow_filter_is_judged_on_the_time_the_worker_measures():
    slow = spec("SlowBox", filter_code("SlowBox", "        import time\n        time.sleep(0.05)"))
    policy = ErrorPolicy(max_error_rate=0.5, window_runs=5, min_runs=3, max_mean_s=0.01)
    with SandboxPool([slow], SandboxLimits(timeout_s=1.0), policy) as pool:
        pool.run(_loci(5))
    assert not slow.enabled and "per locus on average" in slow.disabled_reason


def test_bad_outputs_of_a_sandboxed_filter_are_refused_and_charged_and_nothing_is_dead_lettered(
        tmp_path, shared_data):
    bad = spec("BadOutputs", _bad_outputs_code(), 0)
    good = spec("Good", GOOD, 1)
    pool = SandboxPool([bad, good], SandboxLimits(timeout_s=2), ErrorPolicy(max_error_rate=0))
    runner = PlatformRunner([], policy=pool.policy)
    runner.user, runner.pool = [bad, good], pool.start()
    _, store, sink, pipe = _setup(tmp_path, filters=runner)
    try:
        res = pipe.process(_messages([shared_data / "ztf" / "fink-datasim"]))
    finally:
        pool.close()
    gauges = {m: pipe.metrics.gauge("sandbox_isolation", mechanism=m) for m in ("seccomp", "process_per_filter")}
    assert gauges["seccomp"] == 1 and gauges["process_per_filter"] == 1, gauges  # what holds, in /metrics
    assert res.packets == 31 and res.rejected_total == 0  # no packet dead-lettered
    assert res.tags["good"] == res.packets and res.tags["ok_tag"] == res.packets
    assert set(res.tags) == {"good", "ok_tag"}
    errs = [e for e in bad.recent_errors if e.exception == "FilterOutputRejected"]
    assert len(errs) == res.packets and bad.stats.errors == res.packets  # the filter is charged, once per run
    for words in ("'a/b' is not a valid stream name", "'xxxxxxxx", "'undeclared' is not declared",
                  "'blob': a list is not", "'num_alerts' is computed by the broker"):
        assert words in errs[0].message or words in errs[0].traceback, (words, errs[0].traceback)
    names = sorted(p.name for p in (tmp_path / "s-out").iterdir())
    assert names == ["albireo.loci.good.avro-stream", "albireo.loci.ok_tag.avro-stream"]
    for batch in store.iter_loci():
        for x in batch:
            assert x.user_properties["fine"] == 2.5 and "blob" not in x.user_properties
            assert x.properties["num_alerts"] == len(x.alerts)
    store.close()


class _InProcessBadOutputs(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "inproc_ok", "description": ""}]

    def _run(self, locus):
        import numpy as np

        locus.user_properties["arr"] = np.arange(3)
        locus.provenance["property:arr"] = locus._current
        locus.provenance["garbage"] = "not a provenance record"
        locus.tag("inproc_ok")
        locus.tag("in/process")


def test_an_in_process_filter_is_screened_alike_and_emit_never_fails(tmp_path, ztf_messages):
    f = load_filter_class(_InProcessBadOutputs)
    runner = InProcessRunner([f], policy=ErrorPolicy(max_error_rate=0))
    _, store, sink, pipe = _setup(tmp_path, filters=runner)
    res = pipe.process(ztf_messages)
    assert res.rejected == {"bad_magic": 1}  # the one malformed file of the samples, nothing else
    assert res.tags == {"inproc_ok": res.packets}
    assert f.stats.errors == res.packets
    assert {e.exception for e in f.recent_errors} == {"FilterOutputRejected"}
    assert "'garbage' is not a provenance record" in f.recent_errors[0].message
    store.close()


@pytest.fixture(scope="module")
def ztf_messages(shared_data):
    return _messages([shared_data / "ztf"])


@pytest.mark.parametrize("topic", ["albireo.loci.a/b", "albireo.loci." + LONG_TAG, "..", ""])
def test_the_file_sink_refuses_a_bad_topic_as_a_permanent_error(tmp_path, topic):
    sink = StreamFileSink(tmp_path)
    with pytest.raises(InvalidTopic) as info:
        sink.publish(topic, None, b"x")
    assert not is_transient(info.value)  # dead-lettered with a reason, never retried forever
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("key,value", [("MAX_ERROR_RATE", "2"), ("MIN_RUNS", "0"), ("MAX_MEAN_S", "99"),
                                       ("TMP_MB", "0")])
def test_the_filters_section_is_validated_with_the_setting_named(key, value):
    from broker.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(env={f"ALBIREO_FILTERS__{key}": value})
    assert f"filters.{key.lower()}" in str(info.value)
