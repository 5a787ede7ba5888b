"""Every ANTARES devkit filter gives the same tags and properties on our loci as on the devkit's own.

For each of the devkit's production filters and each test locus, the devkit side
runs ``BaseFilter.run`` on a ``DevKitLocus``; our side runs the *same source code*
(loaded the way a submitted filter is loaded) through our runner on our
:class:`~broker.locus.Locus`. Test loci: the devkit's two real loci, and the loci
our pipeline builds from the real ZTF packets in ``../shared/data``.

A filter that cannot load (a dependency not installable here) must say so, naming
the dependency, on both sides; it is listed, not skipped silently.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import inspect
import io
import math
import random
import warnings

import numpy as np
import pytest

from broker.filtering.contract import FilterLoadError, find_filter_classes, instantiate, load_filter_module
from broker.filtering.devkit import devkit_dict, locus_from_devkit
from broker.filtering.runner import InProcessRunner, LoadedFilter
from broker.ops.samples import devkit_locus, shared_ztf_dir

devkit_models = pytest.importorskip("antares_devkit.models")
devkit_utils = pytest.importorskip("antares_devkit.utils")

#: filters whose output is random by design: compared with the same seed on both sides.
RANDOM_FILTERS = {"RandomTaggerFilter"}

#: devkit filters that break the output contract Albireo enforces at the boundary (the devkit checks
#: nothing): their refused tags are dropped and the run is charged ``FilterOutputRejected``; every
#: other output must still be identical. SampleFilter is the devkit's template: it sets a tag it does
#: not declare, with spaces and a quote, which no Kafka topic or stream file could carry.
CONTRACT_VIOLATIONS = {"SampleFilter": {"THIS IS SOMETHING I'VE ADDED"}}


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_ours(name: str, module: str) -> LoadedFilter:
    """Our side: the filter's unmodified source, loaded as a submitted filter is."""
    src = inspect.getsource(importlib.import_module(module)) if importlib.util.find_spec(module) else ""
    mod = load_filter_module(src, f"albireo_compat_{name}", f"<devkit {name}>")
    # the package's data files are found through the original package name (``from ... import data``)
    classes = [c for c in find_filter_classes(mod) if c.__name__ == name]
    assert classes, f"{name}: no filter class in its source"
    return LoadedFilter(name, "devkit", instantiate(classes[0]))


def load_devkit(name: str, module: str):
    return getattr(importlib.import_module(module), name)()


@pytest.fixture(scope="module")
def filters():
    """(name → (devkit instance, our LoadedFilter)) and (name → why it cannot load)."""
    ok, cannot, devkit_cannot = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, module in devkit_utils.get_filters_path().items():
            try:
                ours = load_ours(name, module)
            except FilterLoadError as exc:
                # the devkit must fail too; a missing package must not be importable
                with pytest.raises(Exception) as info:
                    load_devkit(name, module)
                if exc.missing:
                    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == exc.missing, (name, exc)
                    assert importlib.util.find_spec(exc.missing.split(".")[0]) is None, f"{exc.missing} is importable"
                cannot[name] = str(exc)
                continue
            try:
                theirs = load_devkit(name, module)
            except Exception as exc:  # loads here, not in the devkit (e.g. an old scikit-learn pickle)
                theirs = None
                devkit_cannot[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            ok[name] = (theirs, ours)
    print(f"\n{len(ok)} devkit filters load; {len(cannot)} cannot:")
    for name, why in cannot.items():
        print(f"  {name}: {why}")
    for name, why in devkit_cannot.items():
        print(f"  loads here, not in the devkit: {name}: {why}")
    return ok, cannot


def _pipeline_loci():
    """Loci our pipeline builds from the real ZTF packets of ../shared/data."""
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.association import Associator
    from broker.pipeline import Pipeline

    d = shared_ztf_dir()
    if d is None:
        return []
    assoc = Associator(1.0)
    store = SQLiteStore(":memory:", assoc.order)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(store=store, sink=StreamFileSink(tmp), filters=InProcessRunner([]), associator=assoc)
        src = FileSource([d])
        while batch := src.poll_batch(100, 0):
            pipe.process(batch)
    loci = [x for batch in store.iter_loci() for x in batch]
    store.close()
    return loci


@pytest.fixture(scope="module")
def test_loci(shared_data):
    """(label, devkit dict): the devkit's two real loci and our pipeline's loci, as devkit dicts."""
    out = [("large_locus", devkit_locus("large_locus")), ("small_locus", devkit_locus("small_locus"))]
    for x in _pipeline_loci():
        out.append((f"pipeline:{x.locus_id}", devkit_dict(x)))
    assert len(out) > 20, "expected the shared ZTF packets to give pipeline loci"
    return out


def _devkit_locus(d):
    d = copy.deepcopy(d)
    gw = d.get("grav_wave_events_metadata")
    if isinstance(gw, list):  # the devkit's small_locus lists ids only; the model wants notices
        import datetime

        d["grav_wave_events_metadata"] = {
            g: {"gracedb_id": g, "notice_type": "UPDATE", "notice_datetime": datetime.datetime(1970, 1, 1)}
            for g in gw}
    return devkit_models.DevKitLocus(**d)


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return type(a) is type(b) and a == b


def run_devkit(inst, d):
    loc = _devkit_locus(d)
    tags0, props0 = set(loc.user_tags), dict(loc.user_properties)
    random.seed(12345)
    np.random.seed(12345)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ret = inst.run(loc)
            status, exc_name = ret.status, ret.exception_name
        except BaseException as exc:  # e.g. a Rust panic in light-curve: the devkit does not catch it
            status, exc_name = "Errored", type(exc).__name__
    new_props = {k: v for k, v in loc.user_properties.items() if k not in props0 or not same_value(props0[k], v)}
    return status, exc_name, set(loc.user_tags) - tags0, new_props


def run_ours(lf: LoadedFilter, d):
    locus = locus_from_devkit(copy.deepcopy(d))
    tags0, props0 = set(locus.user_tags), dict(locus.user_properties)
    random.seed(12345)
    np.random.seed(12345)
    lf.enabled = True
    runner = InProcessRunner([lf], max_error_rate=0, max_mean_s=0)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = runner.run([locus])
    status = "Errored" if report.errors else ("Skipped" if report.skipped else (
        "Halted" if report.halted else "Succeeded"))
    exc = report.errors[0].exception if report.errors else None
    new_props = {k: v for k, v in locus.user_properties.items() if k not in props0 or not same_value(props0[k], v)}
    return status, exc, set(locus.user_tags) - tags0, new_props, locus, report


def _outputs_equal(t_tags, t_props, o_tags, o_props) -> bool:
    return t_tags == o_tags and set(t_props) == set(o_props) and all(same_value(t_props[k], o_props[k]) for k in t_props)


def compare_run(name, theirs, ours, d):
    """One filter on one locus, on both sides: (ours ran without error, identical, our cause, devkit's cause).

    ``identical`` is None when the devkit itself errors (nothing to compare with): an error on both
    sides is never a match. A run that ``locus.halt()`` ends is a run without error.
    """
    if theirs is None:  # the devkit cannot even load it
        t_status, t_exc, t_tags, t_props = "Errored", "cannot load", set(), {}
    else:
        t_status, t_exc, t_tags, t_props = run_devkit(theirs, d)
    o_status, o_exc, o_tags, o_props, locus, report = run_ours(ours, d)
    refused = CONTRACT_VIOLATIONS.get(name, set()) & t_tags
    contract_ok = False
    if refused and t_status == "Succeeded":  # the expected, documented difference, checked
        assert (o_status, o_exc) == ("Errored", "FilterOutputRejected"), (name, o_status, o_exc)
        assert not refused & o_tags
        t_tags, contract_ok = t_tags - refused, True
    # provenance: every tag and property our run set names this filter
    for tag in o_tags:
        assert locus.provenance[tag].filter == name
    for k in o_props:
        assert locus.provenance[f"property:{k}"].filter == name
    our_cause = None if o_status != "Errored" or contract_ok else f"{o_exc}: {report.errors[0].message[:160]}"
    their_cause = None if t_status != "Errored" else t_exc
    identical = None
    if their_cause is None:
        same_status = contract_ok or (t_status == "Succeeded") == (o_status in ("Succeeded", "Halted"))
        identical = same_status and _outputs_equal(t_tags, t_props, o_tags, o_props)
    return {"ok": our_cause is None, "identical": identical, "ours": our_cause, "theirs": their_cause,
            "status": o_status, "tags": o_tags, "props": o_props}


def test_devkit_filters_run_on_the_devkit_real_loci(filters, test_loci):
    """The compatibility figure: how many of the devkit's filters run without error on its two real loci.

    Every filter the devkit ships counts (one that cannot load is an error on both loci, with the
    reason). A filter runs without error when neither locus errors; where the devkit's own runner
    (this pandas, this environment) also runs, the tags and properties must be identical.
    """
    ok, cannot = filters
    names = list(devkit_utils.get_filters_path())
    real = test_loci[:2]
    runs: dict[str, dict[str, dict]] = {}
    for name in names:
        for label, d in real:
            if name in cannot:
                runs.setdefault(name, {})[label] = {"ok": False, "identical": None, "ours": cannot[name],
                                                    "theirs": "cannot load", "status": "Errored"}
            else:
                runs.setdefault(name, {})[label] = compare_run(name, *ok[name], d)
    clean = [n for n in names if all(r["ok"] for r in runs[n].values())]
    executed = [n for n in clean if any(r["status"] != "Skipped" for r in runs[n].values())]
    compared = [(n, lbl) for n in names for lbl, r in runs[n].items() if r["identical"] is not None]
    identical = [(n, lbl) for n, lbl in compared if runs[n][lbl]["identical"]]
    identical_filters = [n for n in clean if all(r["identical"] for r in runs[n].values())]
    only_here = [(n, lbl, r["theirs"]) for n in names for lbl, r in runs[n].items() if r["ok"] and r["theirs"]]
    print(f"\nCOMPATIBILITY on the devkit's two real loci: {len(clean)} of {len(names)} devkit filters run "
          f"without error ({len(executed)} of them execute on at least one locus; the others are skipped by "
          f"their constraints on both); {len(identical_filters)} give identical results on both loci; "
          f"{sum(r['ok'] for n in names for r in runs[n].values())} of {2 * len(names)} filter x locus runs "
          f"succeed; {len(identical)} of the {len(compared)} runs the devkit's own runner completes are identical.")
    for n in names:
        for lbl, r in runs[n].items():
            if not r["ok"]:
                print(f"  ERROR {n} on {lbl}: {r['ours']}")
    for n, lbl, why in only_here:
        print(f"  runs here, errors in the devkit's runner: {n} on {lbl} (devkit: {why})")
    mismatches = [(n, lbl, runs[n][lbl]) for n, lbl in compared if not runs[n][lbl]["identical"]]
    assert not mismatches, mismatches
    assert len(names) >= 45
    assert len(clean) >= 40, f"only {len(clean)} of {len(names)} devkit filters run without error"
    assert any(r["tags"] for n in clean for r in runs[n].values())  # the comparison is not vacuous
    assert any(r["props"] for n in clean for r in runs[n].values())


def test_devkit_filters_match_the_devkit_on_pipeline_loci(filters, test_loci):
    """On our pipeline's loci too: where the devkit runs, ours gives the same; errors are listed, never matched."""
    ok, _ = filters
    compared = identical = 0
    errored: list[str] = []
    mismatches = []
    for name, pair in ok.items():
        for label, d in test_loci[2:]:
            r = compare_run(name, *pair, d)
            if r["identical"] is not None:
                compared += 1
                identical += bool(r["identical"])
                if not r["identical"]:
                    mismatches.append((name, label, r))
            if not r["ok"]:
                errored.append(f"{name} on {label}: {r['ours']} (devkit: {r['theirs'] or 'ran'})")
    print(f"\npipeline loci: {identical} of {compared} runs the devkit completes are identical; "
          f"{len(errored)} of our runs error:")
    for line in errored[:60]:
        print("  " + line)
    assert compared > 0
    assert not mismatches, "\n".join(map(str, mismatches[:10]))


def test_sandboxed_devkit_filters_match_in_process_results(filters, test_loci):
    """The same filters, hosted in a sandbox child, give the same tags and properties as in process."""
    from broker.filtering.runner import ErrorPolicy
    from broker.filtering.sandbox import SandboxLimits, SandboxPool

    ok, _ = filters
    names = [n for n in ok if n not in RANDOM_FILTERS]
    specs = []
    for prio, name in enumerate(names):
        module = devkit_utils.get_filters_path()[name]
        code = inspect.getsource(importlib.import_module(module))
        specs.append(LoadedFilter(name, "devkit", None, prio, isolation="sandbox", code=code))
    loci_in = [d for _, d in test_loci[:2]] + [d for _, d in test_loci[2:12]]
    ours = [locus_from_devkit(copy.deepcopy(d)) for d in loci_in]
    reference = [locus_from_devkit(copy.deepcopy(d)) for d in loci_in]
    inproc = InProcessRunner([LoadedFilter(n, "devkit", ok[n][1].instance, i) for i, n in enumerate(names)],
                          max_error_rate=0, max_mean_s=0)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_report = inproc.run(reference)
    with SandboxPool(specs, SandboxLimits(timeout_s=120, memory_mb=8192), ErrorPolicy(max_error_rate=0, max_mean_s=0)) as pool:
        assert not pool.load_errors
        report = pool.run(ours)
    assert report.tags_by_locus == ref_report.tags_by_locus
    assert sorted((e.filter, e.locus_id, e.exception) for e in report.errors) == sorted(
        (e.filter, e.locus_id, e.exception) for e in ref_report.errors)
    for a, b in zip(ours, reference, strict=True):
        assert a.user_tags == b.user_tags
        assert set(a.user_properties) == set(b.user_properties)
        for k, v in b.user_properties.items():
            assert same_value(a.user_properties[k], v), k
        assert {k: (p.filter, p.revision) for k, p in a.provenance.items()} == {
            k: (p.filter, p.revision) for k, p in b.provenance.items()}
    assert any(ref_report.tags_by_locus.values())
