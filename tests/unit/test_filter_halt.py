"""``locus.halt()`` ends the filter chain for that locus, as ANTARES's level-1 filters expect.

``bad_seeing`` and ``bad_detection`` (shipped with antares-devkit) write ``raise locus.halt()``;
the devkit's own ``DevKitLocus`` has no ``halt`` (it errors there). Here a halt is a successful,
final run: what the halting filter set stays, no later filter runs on that locus, other loci go
on, and the report says who halted. Same in process and in the sandbox pool.
"""

from __future__ import annotations

import copy
import importlib
import inspect

import pytest

from broker.filtering.contract import code_hash, find_filter_classes, instantiate, load_filter_module
from broker.filtering.devkit import locus_from_devkit
from broker.filtering.platform import loaded_from_spec
from broker.filtering.runner import ErrorPolicy, InProcessRunner, LoadedFilter
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool
from broker.locus import HaltPipeline
from broker.ops.samples import devkit_locus

FIRST = '''from antares_devkit.models import BaseFilter

class First(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "first", "description": "ran before the halt"}]

    def _run(self, locus):
        locus.tag("first")
'''
HALTER = '''from antares_devkit.models import BaseFilter

class Halter(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "halter", "description": "set before halting"}]

    def _run(self, locus):
        if locus.locus_id.endswith("-halt"):
            locus.tag("halter")
            locus.set_property("halter_seen", 1)
            raise locus.halt()
'''
LAST = '''from antares_devkit.models import BaseFilter

class Last(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "last", "description": "must not run after a halt"}]

    def _run(self, locus):
        locus.tag("last")
'''


def _loci():
    base = devkit_locus("small_locus")
    out = []
    for suffix in ("halt", "go"):
        d = copy.deepcopy(base)
        d["id"] = f"{d['id']}-{suffix}"
        d["user_tags"] = set()  # the devkit locus arrives tagged by ANTARES; only this run's tags matter here
        out.append(locus_from_devkit(d))
    return out


def _inprocess(code: str, prio: int) -> LoadedFilter:
    mod = load_filter_module(code, f"albireo_halt_test_{prio}")
    return LoadedFilter(find_filter_classes(mod)[0].__name__, code_hash(code)[:12],
                        instantiate(find_filter_classes(mod)[0]), prio)


def _check(loci, report) -> None:
    halted, going = loci
    assert report.errors == []
    assert report.halted == {halted.locus_id: "Halter"}
    assert halted.user_tags == {"first", "halter"}
    assert halted.user_properties["halter_seen"] == 1
    assert halted.provenance["halter"].filter == "Halter"
    assert going.user_tags == {"first", "last"}
    assert report.tags_by_locus[halted.locus_id] == {"first", "halter"}


def test_halt_raises_and_can_be_raised():
    locus = _loci()[0]
    with pytest.raises(HaltPipeline):
        locus.halt()
    with pytest.raises(HaltPipeline):
        raise locus.halt()


def test_halt_stops_the_chain_in_process():
    loci = _loci()
    runner = InProcessRunner([_inprocess(c, i) for i, c in enumerate((FIRST, HALTER, LAST))], max_error_rate=0)
    report = runner.run(loci)
    _check(loci, report)
    last = runner.filters[2]
    assert last.stats.runs == 1  # only the locus that was not halted
    # the next run starts afresh: the halt belonged to that run
    report = runner.run(loci[1:])
    assert report.halted == {} and last.stats.runs == 2


def test_halt_stops_the_chain_in_the_sandbox():
    loci = _loci()
    specs = [loaded_from_spec(FilterSpec(n, code_hash(c)[:12], c, i))
             for i, (n, c) in enumerate((("First", FIRST), ("Halter", HALTER), ("Last", LAST)))]
    with SandboxPool(specs, SandboxLimits(timeout_s=30), ErrorPolicy(max_error_rate=0)) as pool:
        assert not pool.load_errors
        report = pool.run(loci)
    _check(loci, report)


def test_devkit_bad_seeing_halts_a_bad_detection():
    """The devkit's BadSeeing, unmodified: an alert with FWHM > 5" halts the chain; a good one does not."""
    module = importlib.import_module("antares_devkit.filters.bad_seeing")
    code = inspect.getsource(module)
    mod = load_filter_module(code, "albireo_halt_bad_seeing")
    bad_seeing = LoadedFilter("BadSeeing", "devkit", instantiate(find_filter_classes(mod)[0]), 0)
    loci = _loci()
    loci[0].alert.properties["ztf_fwhm"] = 7.5
    loci[1].alert.properties["ztf_fwhm"] = 2.0
    loci[1].alert.properties["ztf_elong"] = 1.0
    runner = InProcessRunner([bad_seeing, _inprocess(LAST, 1)], max_error_rate=0)
    report = runner.run(loci)
    assert report.errors == []
    assert report.halted == {loci[0].locus_id: "BadSeeing"}
    assert "last" not in loci[0].user_tags and "last" in loci[1].user_tags
