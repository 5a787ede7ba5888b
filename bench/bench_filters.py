"""Filter runner benchmark: our runner against the ANTARES devkit's, same filters, same loci, same results.

Every devkit filter that loads here runs, in the devkit's priority order, on one
locus: the devkit side calls ``BaseFilter.run`` on a ``DevKitLocus`` (which rebuilds
the pandas/astropy light curve on every ``timeseries()`` call); our side runs the
same code through :class:`broker.filters.FilterRunner` on our :class:`Locus`
(the light curve is built once per locus and survey and shared). Both sides start
from the same random seed, so even the random tagger agrees. Each side runs
``--repeat`` times (alternating, fresh locus each time) and its best total counts.
Prints per-filter and total times, the ratio, and whether tags and properties are
identical in every run; then the same filters hosted in the sandbox pool (IPC
included, process start reported apart).

    python -m bench.bench_filters [--locus large_locus|small_locus] [--repeat N] [--no-sandbox]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import io
import logging
import math
import random
import sys
import time
import warnings

import numpy as np


def _load(names_paths):
    from broker.filtering.runner import LoadedFilter

    ok, cannot = [], {}
    for prio, (name, module) in enumerate(names_paths.items()):
        try:
            inst = getattr(importlib.import_module(module), name)()
        except BaseException as exc:  # report, do not stop: the bench covers what loads
            cannot[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            continue
        ok.append(LoadedFilter(name, "devkit", inst, prio))
    return ok, cannot


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-12)
    return a == b


def _same_results(ours, theirs, ignore_tags: frozenset[str] = frozenset(),
                  ignore_props: frozenset[str] = frozenset()) -> bool:
    """Whether our locus ended with the devkit locus's tags and properties (those of failed filters aside)."""
    mine = set(ours.user_properties) - ignore_props
    return (set(ours.user_tags) - ignore_tags == set(theirs.user_tags) - ignore_tags
            and mine == set(theirs.user_properties) - ignore_props
            and all(_same(theirs.user_properties[k], ours.user_properties[k]) for k in mine))


def _outputs(f) -> tuple[frozenset[str], frozenset[str]]:
    """The tags and locus properties filter ``f`` declares it sets."""
    from broker.filtering.runner import declared_tag_set

    props = getattr(f.instance, "OUTPUT_LOCUS_PROPERTIES", None) or []
    return declared_tag_set(f), frozenset(p["name"] if isinstance(p, dict) else str(p) for p in props)


def _totals(runs) -> str:
    return ", ".join(f"{sum(r[1].values()):.2f}" for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--locus", default="large_locus", choices=["large_locus", "small_locus"])
    ap.add_argument("--no-sandbox", action="store_true", help="Skip the sandboxed run.")
    ap.add_argument("--repeat", type=int, default=5, help="Runs per side; the best total of each is compared.")
    args = ap.parse_args(argv)

    from antares_devkit.models import DevKitLocus
    from antares_devkit.utils import get_filters_path

    from broker.filtering.devkit import locus_from_devkit
    from broker.filtering.runner import InProcessRunner
    from broker.ops.samples import devkit_locus

    warnings.simplefilter("ignore")
    d = devkit_locus(args.locus)
    filters, cannot = _load(get_filters_path())
    print(f"locus {args.locus}: {len(d['alerts'])} alerts; {len(filters)} devkit filters load, "
          f"{len(cannot)} cannot ({', '.join(cannot)})")

    def devkit_pass():
        """One DevKitLocus, every filter in turn (as ANTARES runs them on one alert)."""
        dk = DevKitLocus(**copy.deepcopy(d))
        random.seed(1)
        np.random.seed(1)
        times, failed = {}, {}
        with contextlib.redirect_stdout(io.StringIO()):
            for f in filters:
                t0 = time.perf_counter()
                try:
                    ret = f.instance.run(dk)  # the devkit catches what _run raises and returns it
                except BaseException as exc:  # a Rust panic escapes the devkit's own handler
                    failed[f.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
                else:
                    if getattr(ret, "status", None) == "Errored":
                        failed[f.name] = f"{ret.exception_name}: {(ret.exception_message or '').splitlines()[0][:80]}"
                times[f.name] = time.perf_counter() - t0
        return dk, times, failed

    def our_pass():
        """A fresh Locus (nothing cached), the same filters through our runner."""
        ours = locus_from_devkit(copy.deepcopy(d))
        random.seed(1)
        np.random.seed(1)
        for f in filters:
            f.stats.total_s = 0.0
        runner = InProcessRunner(filters, max_error_rate=0, max_mean_s=0)
        with contextlib.redirect_stdout(io.StringIO()):
            logging.disable(logging.WARNING)
            t0 = time.perf_counter()
            report = runner.run([ours])
            wall = time.perf_counter() - t0
            logging.disable(logging.NOTSET)
        failed = {e.filter: f"{e.exception}: {e.message.splitlines()[0][:80] if e.message else ''}"
                  for e in report.errors}
        return ours, {f.name: f.stats.total_s for f in filters}, wall, failed

    # Alternate the two sides, best of N each: the same rule for both, so a noisy
    # moment on a shared machine does not decide the ratio.
    dk_runs, our_runs = [], []
    for _ in range(args.repeat):
        dk_runs.append(devkit_pass())
        our_runs.append(our_pass())
    dk, dk_times, _ = min(dk_runs, key=lambda r: sum(r[1].values()))
    ours, our_times, t_all, _ = min(our_runs, key=lambda r: sum(r[1].values()))
    # tags the devkit lets a filter set but Albireo refuses at the boundary (undeclared, or no stream could
    # carry them: SampleFilter's "THIS IS SOMETHING I'VE ADDED"): listed, and left out of the comparison
    from broker.filtering.contract import tag_problem
    from broker.filtering.runner import declared_tag_set

    declared = frozenset().union(*(declared_tag_set(f) for f in filters))
    refused = frozenset(t for t in dk.user_tags - set(d.get("user_tags") or []) if tag_problem(t, declared))
    # A filter that raised on either side proves nothing about the other: its outputs are left out of
    # the comparison and it is listed with its cause. Raising on our side only is a difference (but for
    # the refusal of a tag listed above, which is the boundary doing its job).
    dk_failed = {k: v for r in dk_runs for k, v in r[2].items()}
    our_failed = {k: v for r in our_runs for k, v in r[3].items()
                  if not (v.startswith("FilterOutputRejected") and any(t[:40] in v for t in refused))}
    failed_names = set(dk_failed) | set(our_failed)
    skip_tags = frozenset().union(*(_outputs(f)[0] for f in filters if f.name in failed_names))
    skip_props = frozenset().union(*(_outputs(f)[1] for f in filters if f.name in failed_names))
    ignore = refused | skip_tags
    same_tags = all(set(r[0].user_tags) - ignore == set(dk.user_tags) - ignore for r in dk_runs + our_runs)
    same_props = all(_same_results(r[0], dk, ignore_tags=ignore, ignore_props=skip_props) for r in our_runs)

    print(f"\n{'filter':36s} {'devkit ms':>11s} {'albireo ms':>11s} {'ratio':>8s}")
    for f in filters:
        a, b = dk_times[f.name] * 1e3, our_times[f.name] * 1e3
        print(f"{f.name:36s} {a:11.1f} {b:11.1f} {a / b if b > 0 else float('inf'):7.1f}x")
    dk_total, our_total = sum(dk_times.values()), sum(our_times.values())
    print(f"{'TOTAL':36s} {dk_total * 1e3:11.1f} {our_total * 1e3:11.1f} {dk_total / our_total:7.1f}x")
    print(f"(albireo wall time including constraint checks and bookkeeping: {t_all * 1e3:.1f} ms)")
    print(f"best of {args.repeat} runs per side; devkit totals [{_totals(dk_runs)}] s, "
          f"albireo totals [{_totals(our_runs)}] s")
    both = sorted(set(dk_failed) & set(our_failed))
    only_dk, only_ours = sorted(set(dk_failed) - set(our_failed)), sorted(set(our_failed) - set(dk_failed))
    print(f"compared: the {len(filters) - len(failed_names)} of {len(filters)} filters that ran without error on "
          "both sides")
    for label, names, causes in (("raised on both sides", both, dk_failed), ("raised under the devkit only",
                                 only_dk, dk_failed), ("raised under albireo only", only_ours, our_failed)):
        for name in names:
            print(f"  {label}: {name} ({causes[name]})")
    print(f"identical results: tags {'yes' if same_tags else 'NO'}, properties {'yes' if same_props else 'NO'} "
          f"({len(ours.user_tags)} tags, {len(ours.user_properties)} properties)"
          + (f"; refused at the boundary, as designed: {sorted(refused)}" if refused else ""))

    # nothing compared proves nothing: at least one filter must have run on both sides
    ok = same_tags and same_props and not only_ours and len(failed_names) < len(filters)
    if not args.no_sandbox:
        from broker.filtering.runner import ErrorPolicy, LoadedFilter
        from broker.filtering.sandbox import SandboxLimits, SandboxPool

        specs = [LoadedFilter(f.name, "devkit", None, f.priority, isolation="sandbox",
                              code=inspect.getsource(importlib.import_module(get_filters_path()[f.name])))
                 for f in filters if f.name != "RandomTaggerFilter"]
        logging.disable(logging.WARNING)  # the devkit's CrashFilter & co. log their (expected) errors every run
        t_start = time.perf_counter()
        with SandboxPool(specs, SandboxLimits(timeout_s=300, memory_mb=8192), ErrorPolicy(max_error_rate=0, max_mean_s=0)) as pool:
            t_start = time.perf_counter() - t_start
            pool.run([locus_from_devkit(copy.deepcopy(d))])  # warm-up: the child's first imports, as a worker pays once
            sb_times = []
            for _ in range(args.repeat):
                sb = locus_from_devkit(copy.deepcopy(d))
                t0 = time.perf_counter()
                pool.run([sb])
                sb_times.append(time.perf_counter() - t0)
                # the random tagger is the one filter left out of the sandboxed run
                same = _same_results(sb, dk, ignore_tags=ignore | {"random_tagger_filter"}, ignore_props=skip_props)
                if not same and ok:
                    theirs, mine = dk.user_properties, sb.user_properties
                    print("sandboxed run differs: tags", sorted((set(sb.user_tags) ^ set(dk.user_tags)) - ignore),
                          "properties", sorted(k for k in (set(theirs) | set(mine)) - skip_props
                                               if k not in theirs or k not in mine or not _same(theirs[k], mine[k])))
                ok = ok and same
        t_sb = min(sb_times)
        dk_sb = dk_total - dk_times.get("RandomTaggerFilter", 0.0)
        print(f"sandbox start ({len(specs)} filters loaded, isolation included): {t_start:.2f} s")
        print(f"sandboxed (warm children, IPC included; best of {args.repeat}: "
              f"{', '.join(f'{t:.2f}' for t in sb_times)} s): {t_sb * 1e3:.1f} ms total, "
              f"{dk_sb / t_sb:.1f}x faster than the devkit runner; results {'identical' if ok else 'DIFFER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
