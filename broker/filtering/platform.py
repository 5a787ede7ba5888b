"""What the pipeline's filter stage calls: built-ins in process, registered revisions in the sandbox.

:class:`PlatformRunner` implements :class:`broker.ports.FilterRunner`. It polls the registry for
enabled revisions, so enabling or disabling a filter takes effect without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import broker
from broker.filtering.runner import (
    ErrorPolicy,
    InProcessRunner,
    LoadedFilter,
    RunReport,
    export_filter_metrics,
)
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool, isolation_summary
from broker.locus import Locus
from broker.metrics import Metrics

log = logging.getLogger("albireo.filters")


# ---- what the pipeline calls ------------------------------------------------------------------
def loaded_from_spec(spec: FilterSpec) -> LoadedFilter:
    return LoadedFilter(spec.name, spec.revision, None, spec.priority, isolation="sandbox", code=spec.code,
                        requires=tuple(spec.requires))


class PlatformRunner:
    """Built-ins in process, registered revisions in the sandbox, all in priority order.

    ``revisions`` is polled every ``refresh_s`` seconds for the enabled revisions
    (see :func:`broker.filtering.registry.enabled_specs`): a newly enabled filter,
    a new revision or a disabled one takes effect at the next batch after the
    poll, without restarting the worker. Consecutive filters of the same kind run
    as one group over the whole batch, which keeps each locus's filter order.
    """

    def __init__(self, builtins: list[LoadedFilter], revisions: Callable[[], list[FilterSpec]] | None = None,
                 limits: SandboxLimits | None = None, policy: ErrorPolicy | None = None, refresh_s: float = 30.0,
                 slow_s: float = 5.0, metrics: Metrics | None = None):
        self.builtins = list(builtins)
        self.revisions = revisions
        self.limits = limits or SandboxLimits()
        self.policy = policy or ErrorPolicy()
        self.refresh_s = refresh_s
        self.slow_s = slow_s
        self.metrics = metrics
        self.pool: SandboxPool | None = None
        self.user: list[LoadedFilter] = []
        #: user filters no longer enabled in the registry, kept for their statistics.
        self.retired: dict[tuple[str, str], LoadedFilter] = {}
        self._last_refresh = -float("inf")
        self._inproc = InProcessRunner([], slow_s=slow_s, policy=self.policy, metrics=metrics)

    @property
    def filters(self) -> list[LoadedFilter]:
        """Every filter in run order: declared dependencies first, then priority, then name."""
        from broker.filtering.dependencies import order_filters

        return order_filters(self.builtins + self.user)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the enabled revisions; rebuild the pool when they changed. True if anything changed."""
        if self.revisions is None or (not force and time.monotonic() - self._last_refresh < self.refresh_s):
            return False
        self._last_refresh = time.monotonic()
        try:
            specs = self.revisions()
        except Exception as exc:  # the registry being unreachable must not stop ingestion
            log.error("could not read the filter registry (%s: %s); keeping the current filters",
                      type(exc).__name__, exc)
            return False
        want = {(s.name, s.revision, s.priority, tuple(s.requires)) for s in specs}
        have = {(f.name, f.revision, f.priority, f.requires) for f in self.user}
        if want == have:
            return False
        old = {(f.name, f.revision): f for f in self.user}
        keep = {(s.name, s.revision) for s in specs}
        self.retired.update({k: f for k, f in old.items() if k not in keep})  # their stats stay visible
        self.user = []
        for s in specs:
            f = old.get((s.name, s.revision)) or self.retired.pop((s.name, s.revision), None) or loaded_from_spec(s)
            f.priority, f.requires = s.priority, tuple(s.requires)
            f.enabled, f.disabled_reason = True, ""  # the registry says enabled
            self.user.append(f)
        from broker.filtering.dependencies import order_filters

        self.user = order_filters(self.user)  # the sandbox runs its chain in this list's order
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.user:
            self.pool = SandboxPool(self.user, self.limits, self.policy, self.metrics)
            self.pool.start()
        log.info("filters reloaded: %s", ", ".join(f"{f.name}@{f.revision}" for f in self.user) or "(none)")
        return True

    def prepare(self) -> None:
        """Read the registry and start the sandbox pool before the first batch."""
        self.refresh(force=True)

    def run(self, loci: list[Locus]) -> RunReport:
        self.refresh()
        report = RunReport()
        for x in loci:
            report.tags_by_locus.setdefault(x.locus_id, set())
            x.halted_by = None  # locus.halt() stops the chain of this run only
        for kind, group in self._groups():
            if kind == "sandbox" and self.pool is not None:
                self.pool.run(loci, report, names={f.name for f in group})
            else:
                self._inproc.filters = group
                for x in loci:
                    run_tags = report.tags_by_locus[x.locus_id]
                    for f in group:
                        if x.halted_by is None:
                            self._inproc.run_or_skip(f, x, report, run_tags)
        return report

    def _groups(self) -> list[tuple[str, list[LoadedFilter]]]:
        groups: list[tuple[str, list[LoadedFilter]]] = []
        for f in self.filters:
            kind = "sandbox" if f.isolation == "sandbox" else "inprocess"
            if groups and groups[-1][0] == kind:
                groups[-1][1].append(f)
            else:
                groups.append((kind, [f]))
        return groups

    def export_metrics(self, metrics: Metrics) -> None:
        """Per-filter gauges (runs, skipped, errors, timeouts, crashes, tagged, enabled) for ``/metrics``,
        and ``sandbox_isolation{mechanism=...}`` (1: holds, 0: the kernel refused it) while user filters run."""
        export_filter_metrics([*self.filters, *self.retired.values()], metrics)
        if self.pool is not None and self.pool.isolation:
            for mechanism, on in isolation_summary(self.pool.isolation).items():
                metrics.set("sandbox_isolation", int(on), mechanism=mechanism)
            metrics.set("sandbox_respawns_total", self.pool.respawns)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def pipeline_version() -> str:
    return broker.__version__
