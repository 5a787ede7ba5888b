"""Index-wide statistics (``/v2/loci/statistics``, the home page): tag and catalog counts, alert range.

One :meth:`~broker.ports.Index.summary` request (an SQL aggregate on the embedded index, one
aggregation request on Elasticsearch). Results are cached briefly: the home page polls them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from broker.ports import Index

_TTL_S = 5.0
_lock = threading.Lock()
_cache: dict[int, tuple[float, dict[str, Any]]] = {}


def statistics(index: Index) -> dict[str, Any]:
    """``{tags, catalogs, min_num_measurements, max_num_measurements, num_loci}``."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(id(index))
        if hit and now - hit[0] < _TTL_S:
            return hit[1]
    s = index.summary()
    out = {"tags": s.tags, "catalogs": s.catalogs, "min_num_measurements": s.min_num_alerts,
           "max_num_measurements": s.max_num_alerts, "num_loci": s.count}
    with _lock:
        _cache[id(index)] = (now, out)
    return out


def invalidate() -> None:
    with _lock:
        _cache.clear()
