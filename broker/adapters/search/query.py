"""Query pieces both index backends share: field names, limits, validation of a ``LocusQuery``.

Kept in one place so that the embedded and the Elasticsearch index reject the same queries with
the same messages, which is what the contract tests check.
"""

from __future__ import annotations

import math
import re
from typing import Any

from broker.adapters.search.sky import check_cone
from broker.ports import LocusQuery, QueryError

#: the largest page either backend returns.
MAX_LIMIT = 1000
#: the most pixel ranges a region query may carry (callers coarsen their MOC below it).
MAX_REGION_RANGES = 1000
#: the HEALPix order both backends index locus positions at (``pixel`` / ``pixel16``).
PIXEL_ORDER = 16
#: document fields that are not under ``properties``.
TOP_LEVEL = ("locus_id", "ra", "dec", "num_alerts", "first_alert_mjd", "last_alert_mjd")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")


def property_name(name: str) -> str:
    """Validate a property name used in a range, term or sort."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise QueryError(f"bad property name {name!r}: letters, digits, '_', '.', ':', '-' only")
    return name


def field_path(name: str) -> str:
    """The document path a query name refers to: a top-level field or ``properties.<name>``."""
    property_name(name)
    return name if name in TOP_LEVEL else f"properties.{name}"


def parse_sort(sort: str) -> tuple[str, bool]:
    """``"-newest_alert_observation_time"`` → (``"newest_alert_observation_time"``, descending=True)."""
    if not isinstance(sort, str) or not sort.strip("-"):
        raise QueryError(f"bad sort {sort!r}: a property name, '-' prefix for descending")
    desc = sort.startswith("-")
    return property_name(sort[1:] if desc else sort), desc


def check(query: LocusQuery) -> LocusQuery:
    """Reject malformed structured parts (every backend calls this first)."""
    if not isinstance(query.limit, int) or isinstance(query.limit, bool) or not 0 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit {query.limit!r}: must be an integer in [0, {MAX_LIMIT}]")
    if query.cone is not None:
        query.cone = check_cone(query.cone)
    if query.region is not None:
        region_ranges_at(query.region, PIXEL_ORDER)  # validates
    for tag in query.tags:
        if not isinstance(tag, str) or not tag:
            raise QueryError(f"bad tag {tag!r}")
    for event in query.events:
        if not isinstance(event, str) or not event:
            raise QueryError(f"bad event id {event!r}")
    for name, bounds in query.ranges.items():
        property_name(name)
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise QueryError(f"range for {name!r}: expected (low, high)")
        for b in bounds:
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)):
                raise QueryError(f"range for {name!r}: bounds must be finite numbers or None, got {b!r}")
    for name, value in query.terms.items():
        property_name(name)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise QueryError(f"term for {name!r}: expected a string, got {value!r}")
    parse_sort(query.sort)
    if query.search_after is not None and (not isinstance(query.search_after, (list, tuple))
                                           or len(query.search_after) != 2):
        raise QueryError("search_after must be the next_cursor of a previous result")
    return query


def check_sample_size(n: object) -> int:
    """A random sample's size: an integer in [0, MAX_LIMIT] (both backends refuse alike)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_LIMIT:
        raise QueryError(f"n {n!r}: must be an integer in [0, {MAX_LIMIT}]")
    return n


def document_values(doc: dict[str, Any], name: str) -> Any:
    """The value a query name selects in one document (for exact post-filters)."""
    if name in TOP_LEVEL:
        return doc.get(name)
    return (doc.get("properties") or {}).get(name)


class DocumentsRejected(Exception):
    """The index refused some documents for good (bad shape, mapping conflict); retrying cannot help.

    ``rejected`` maps locus id → reason; every other document of the call was written.
    """

    def __init__(self, rejected: dict[str, str]):
        super().__init__(f"{len(rejected)} document(s) rejected: "
                         + "; ".join(f"{k}: {v}" for k, v in list(rejected.items())[:3]))
        self.rejected = rejected


def region_ranges_at(region: Any, order: int) -> list[tuple[int, int]]:
    """A :class:`~broker.ports.SkyRegion`'s ranges as ``[lo, hi)`` ranges at ``order`` (a superset when coarser)."""
    depth = getattr(region, "depth", None)
    ranges = getattr(region, "ranges", None)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 29:
        raise QueryError(f"region depth {depth!r}: an integer in [0, 29]")
    if ranges is None or len(ranges) > MAX_REGION_RANGES:
        raise QueryError(f"region: at most {MAX_REGION_RANGES} pixel ranges (coarsen the MOC)")
    out = []
    top = 12 * 4**depth
    for r in ranges:
        try:
            lo, hi = int(r[0]), int(r[1])
        except (TypeError, ValueError, IndexError):
            raise QueryError(f"region range {r!r}: expected (lo, hi) integers") from None
        if not 0 <= lo < hi <= top:
            raise QueryError(f"region range {r!r}: needs 0 <= lo < hi <= {top} at depth {depth}")
        if depth <= order:
            s = 2 * (order - depth)
            out.append((lo << s, hi << s))
        else:
            s = 2 * (depth - order)
            out.append((lo >> s, -(-hi >> s)))
    return out


def check_events(query: Any) -> Any:
    """Reject malformed :class:`~broker.ports.EventQuery` parts (both backends call this first)."""
    if not isinstance(query.limit, int) or isinstance(query.limit, bool) or not 0 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit {query.limit!r}: must be an integer in [0, {MAX_LIMIT}]")
    for name in ("since_mjd", "until_mjd"):
        v = getattr(query, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise QueryError(f"{name} {v!r}: a finite number")
    if query.status not in (None, "active", "retracted"):
        raise QueryError(f"status {query.status!r}: 'active' or 'retracted'")
    return query
