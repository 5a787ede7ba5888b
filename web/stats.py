"""Index-wide statistics (``/v2/loci/statistics``, the home page): tag and catalog counts, alert range.

The ``Index`` port only promises tag counts; catalog counts and the min/max number of alerts come
from the backend directly (one SQL aggregate on the embedded index, one aggregation request on
Elasticsearch). Results are cached briefly: the home page polls them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from broker.ports import Index

_TTL_S = 5.0
_lock = threading.Lock()
_cache: dict[int, tuple[float, dict[str, Any]]] = {}


def _extra_sqlite(index: Any) -> tuple[dict[str, int], int, int]:
    with index._lock:  # noqa: SLF001 - the embedded index is ours; one aggregate beats N documents
        cats = dict(index._db.execute(
            "SELECT j.value, COUNT(*) FROM docs, json_each(docs.doc, '$.catalogs') AS j GROUP BY j.value"))
        lo, hi = index._db.execute(
            "SELECT MIN(json_extract(doc, '$.num_alerts')), MAX(json_extract(doc, '$.num_alerts')) FROM docs"
        ).fetchone()
    return cats, int(lo or 0), int(hi or 0)


def _extra_elasticsearch(index: Any) -> tuple[dict[str, int], int, int]:
    resp = index._es.search(index=index.name, size=0, aggs={  # noqa: SLF001
        "catalogs": {"terms": {"field": "catalogs", "size": 1000}},
        "lo": {"min": {"field": "num_alerts"}}, "hi": {"max": {"field": "num_alerts"}}})
    aggs = resp["aggregations"]
    cats = {b["key"]: b["doc_count"] for b in aggs["catalogs"]["buckets"]}
    return cats, int(aggs["lo"]["value"] or 0), int(aggs["hi"]["value"] or 0)


def statistics(index: Index) -> dict[str, Any]:
    """``{tags, catalogs, min_num_measurements, max_num_measurements, num_loci}``."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(id(index))
        if hit and now - hit[0] < _TTL_S:
            return hit[1]
    kind = type(index).__name__
    if kind == "SQLiteIndex":
        cats, lo, hi = _extra_sqlite(index)
    elif kind == "ElasticsearchIndex":
        cats, lo, hi = _extra_elasticsearch(index)
    else:
        cats, lo, hi = {}, 0, 0
    out = {"tags": index.tag_counts(), "catalogs": dict(sorted(cats.items())), "min_num_measurements": lo,
           "max_num_measurements": hi, "num_loci": index.count()}
    with _lock:
        _cache[id(index)] = (now, out)
    return out


def invalidate() -> None:
    with _lock:
        _cache.clear()
