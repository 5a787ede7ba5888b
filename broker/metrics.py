"""Counters and timings for every stage, rendered in the Prometheus text format.

Deliberately tiny (no client library): a worker keeps one :class:`Metrics`,
stages call :meth:`Metrics.inc` and :meth:`Metrics.time`, and ``/metrics``
(portal) or ``albireo run --metrics-port`` serve :meth:`Metrics.render`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

#: histogram bucket upper bounds, seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    def __init__(self, prefix: str = "albireo_"):
        self.prefix = prefix
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.gauges: dict[tuple[str, str], float] = {}
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._hist_sum: dict[tuple[str, str], float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.counters[(name, _labels(labels))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.gauges[(name, _labels(labels))] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            counts = self._hist.setdefault(key, [0.0] * (len(BUCKETS) + 1))
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    counts[i] += 1
            counts[-1] += 1
            self._hist_sum[key] += seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Time a pipeline stage into ``stage_seconds{stage=...}``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe("stage_seconds", time.perf_counter() - t0, stage=stage)

    def counter(self, name: str, **labels: str) -> float:
        return self.counters.get((name, _labels(labels)), 0.0)

    def stage_totals(self) -> dict[str, float]:
        """Total seconds spent per stage (for summaries)."""
        out = {}
        for (name, labels), total in self._hist_sum.items():
            if name == "stage_seconds":
                out[labels.split('"')[1]] = total
        return out

    def render(self) -> str:
        lines = []
        with self._lock:
            for (name, labels), v in sorted(self.counters.items()):
                lines.append(f"{self.prefix}{name}_total{labels} {v:g}")
            for (name, labels), v in sorted(self.gauges.items()):
                lines.append(f"{self.prefix}{name}{labels} {v:g}")
            for (name, labels), counts in sorted(self._hist.items()):
                base = labels[1:-1] + "," if labels else ""
                for b, c in zip(BUCKETS, counts, strict=False):
                    lines.append(f'{self.prefix}{name}_bucket{{{base}le="{b}"}} {c:g}')
                lines.append(f'{self.prefix}{name}_bucket{{{base}le="+Inf"}} {counts[-1]:g}')
                lines.append(f"{self.prefix}{name}_sum{labels} {self._hist_sum[(name, labels)]:g}")
                lines.append(f"{self.prefix}{name}_count{labels} {counts[-1]:g}")
        return "\n".join(lines) + "\n"
