"""Declared dependencies between filters: the order they run in, and when a dependent is skipped.

A filter may declare ``REQUIRES_FILTERS = ["other_name", ...]``: the filters whose tags and
properties it reads (ANTARES filters read each other's results through ``locus.tags`` and
``locus.properties``). The platform then runs filters in a topological order of these
declarations (ties broken by priority, then name), so that what an earlier filter wrote is on the
locus when a later one runs, in process and across the sandbox boundary alike (the sandbox sends
each child the locus's tags and properties as they are when its turn comes).

Enabling a filter whose dependencies are not all enabled, or which would close a cycle, is
refused (:func:`check_enabled_set`). At run time, a dependent whose dependency did not run
successfully on a locus (it raised, timed out, crashed, was skipped, is disabled or not enabled)
is *skipped* on that locus, with the reason recorded: it is not charged with an error.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class DependencyError(ValueError):
    """A set of filters that cannot run in a declared order: a dependency missing, or a cycle."""


def declared_requires(obj: Any) -> tuple[str, ...]:
    """``REQUIRES_FILTERS`` of a filter class/instance or a registry ``meta`` dict, as a tuple of names.

    A malformed declaration (not a list of strings) is a :class:`DependencyError`, said plainly.
    """
    raw = obj.get("REQUIRES_FILTERS", ()) if isinstance(obj, Mapping) else getattr(obj, "REQUIRES_FILTERS", ())
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise DependencyError(f"REQUIRES_FILTERS must be a list of filter names, not {raw!r}")
    return tuple(dict.fromkeys(x.strip() for x in raw if x.strip()))


def topological_order(nodes: Sequence[tuple[str, int, Sequence[str]]], strict: bool = True) -> list[str]:
    """Names of ``(name, priority, requires)`` in an order where every dependency comes first.

    Among filters free to run, the lower priority runs first, then the smaller name, so the
    order is deterministic and, with no declarations, is plain priority order. ``strict``: a
    dependency not among ``nodes`` is a :class:`DependencyError`; otherwise it is ignored here
    (the run-time skip handles it). A cycle is always a :class:`DependencyError` naming it.
    """
    by_name = {n: (p, tuple(r)) for n, p, r in nodes}
    missing = {n: [d for d in r if d not in by_name] for n, (_, r) in by_name.items()}
    missing = {n: m for n, m in missing.items() if m}
    if strict and missing:
        n, m = sorted(missing.items())[0]
        raise DependencyError(f"filter {n!r} requires {', '.join(map(repr, m))}, which "
                              f"{'is' if len(m) == 1 else 'are'} not enabled (enable "
                              f"{'it' if len(m) == 1 else 'them'} first)")
    indegree = {n: sum(1 for d in r if d in by_name and d != n) for n, (_, r) in by_name.items()}
    for n, (_, r) in by_name.items():
        if n in r:
            raise DependencyError(f"filter {n!r} requires itself")
    dependents: dict[str, list[str]] = {n: [] for n in by_name}
    for n, (_, r) in by_name.items():
        for d in r:
            if d in by_name:
                dependents[d].append(n)
    ready = [(by_name[n][0], n) for n, k in indegree.items() if k == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        out.append(n)
        for m in dependents[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(ready, (by_name[m][0], m))
    if len(out) < len(by_name):
        raise DependencyError("filters depend on each other in a cycle: " + _cycle(by_name, set(out)))
    return out


def _cycle(by_name: Mapping[str, tuple[int, tuple[str, ...]]], done: set[str]) -> str:
    """One cycle among the filters not in ``done``, as ``a -> b -> a``."""
    left = sorted(n for n in by_name if n not in done)
    path: list[str] = [left[0]]
    while True:
        nxt = sorted(d for d in by_name[path[-1]][1] if d in by_name and d not in done)[0]
        if nxt in path:
            return " -> ".join([*path[path.index(nxt):], nxt])
        path.append(nxt)


def check_enabled_set(nodes: Iterable[tuple[str, int, Sequence[str]]]) -> list[str]:
    """The run order of a set of filters about to be enabled together; :class:`DependencyError` if none exists."""
    return topological_order(list(nodes), strict=True)


def order_filters(filters: Sequence[Any]) -> list[Any]:
    """``LoadedFilter`` objects in run order, tolerating what the enable-time check would refuse.

    A dependency that is not loaded is ignored for ordering (its dependents are skipped at run
    time, with the reason). Filters caught in a cycle (possible only if the registry was edited
    behind the platform's back) run last in priority order, and their dependents are skipped.
    """
    nodes = [(f.name, f.priority, tuple(getattr(f, "requires", ()) or ())) for f in filters]
    try:
        names = topological_order(nodes, strict=False)
    except DependencyError:
        return sorted(filters, key=lambda f: (f.priority, f.name))
    pos = {n: i for i, n in enumerate(names)}
    return sorted(filters, key=lambda f: pos[f.name])


#: outcomes of one filter on one locus after which a dependent may run.
SATISFIED = frozenset({"ok", "halted"})

_WHY = {
    "error": "raised an error", "timeout": "timed out", "crash": "crashed", "skipped": "was skipped (its "
    "constraints are not met)", "disabled": "is disabled", "dependency_skipped": "was itself skipped",
}


def blocked_reason(requires: Sequence[str], outcomes: Mapping[str, str] | None) -> tuple[str, str] | None:
    """(dependency, reason) of the first dependency that did not run successfully on this locus, or None."""
    outcomes = outcomes or {}
    for dep in requires:
        st = outcomes.get(dep)
        if st in SATISFIED:
            continue
        if st is None:
            return dep, f"dependency {dep!r} did not run on this locus (not enabled, or disabled)"
        return dep, f"dependency {dep!r} {_WHY.get(st, st)} on this locus"
    return None
