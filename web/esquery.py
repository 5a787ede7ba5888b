"""Turn the Elasticsearch bodies ``antares-client`` sends into a structured :class:`LocusQuery`.

With the Elasticsearch index a body is passed through (validated by the index). The embedded
index runs structured queries only, so the shapes ANTARES users actually send are translated here:
``match_all``, ``bool`` with ``filter``/``must`` lists of ``term``, single-value ``terms``,
``range`` and ``sky_distance``. Anything else is a :class:`QueryError` (HTTP 400) that names the
clause, never a silent "match everything".
"""

from __future__ import annotations

import math
from typing import Any

from broker.adapters.search.sky import parse_sky_distance
from broker.ports import LocusQuery, QueryError

#: ANTARES field paths whose value the embedded index keeps under another name.
FIELD_ALIASES = {
    "survey.lsst.dia_object_id": "lsst_dia_object_id",
    "survey.ztf.id": "ztf_object_id",
    "locus_id": "locus_id",
}


def field_name(path: str) -> str:
    """``properties.ztf_object_id`` → ``ztf_object_id`` (the name :class:`LocusQuery` uses)."""
    if not isinstance(path, str) or not path:
        raise QueryError(f"bad field name {path!r}")
    name = path.removeprefix("properties.").removesuffix(".keyword")
    return FIELD_ALIASES.get(name, name)


def sort_name(sort: str) -> str:
    """ANTARES sorts on ``-properties.newest_alert_observation_time``; ours on the bare name."""
    desc = sort.startswith("-")
    name = field_name(sort.lstrip("-"))
    return ("-" if desc else "") + name


def _clauses(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _single(clause: dict[str, Any], kind: str) -> tuple[str, Any]:
    body = clause[kind]
    if not isinstance(body, dict) or len(body) != 1:
        raise QueryError(f"{kind} must name exactly one field, got {body!r}")
    return next(iter(body.items()))


def _apply(clause: Any, q: LocusQuery) -> None:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise QueryError(f"query clause must be an object with one key, got {clause!r}")
    kind = next(iter(clause))
    if kind == "match_all":
        return
    if kind == "bool":
        body = clause["bool"]
        if not isinstance(body, dict):
            raise QueryError("bool must be an object")
        unsupported = set(body) - {"filter", "must"}
        if unsupported:
            raise QueryError(f"bool.{sorted(unsupported)[0]} needs the Elasticsearch backend; the embedded "
                             "index supports bool.filter and bool.must")
        for key in ("filter", "must"):
            for sub in _clauses(body.get(key, [])):
                _apply(sub, q)
        return
    if kind == "sky_distance":
        if q.cone is not None:
            raise QueryError("only one sky_distance per query on the embedded index")
        q.cone = parse_sky_distance(clause["sky_distance"])
        return
    if kind in ("term", "match", "match_phrase"):
        path, value = _single(clause, kind)
        if isinstance(value, dict):
            value = value.get("value", value.get("query"))
        name = field_name(path)
        if name in ("tags", "tag"):
            q.tags.append(str(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            q.ranges[name] = (value, value)
        elif isinstance(value, str):
            q.terms[name] = value
        else:
            raise QueryError(f"{kind} on {path!r}: expected a string or number, got {value!r}")
        return
    if kind == "terms":
        path, values = _single(clause, kind)
        if not isinstance(values, list) or len(values) != 1:
            raise QueryError("terms with several values (OR) needs the Elasticsearch backend; "
                             "the embedded index accepts one value")
        _apply({"term": {path: values[0]}}, q)
        return
    if kind == "range":
        path, bounds = _single(clause, kind)
        if not isinstance(bounds, dict) or not set(bounds) <= {"gte", "gt", "lte", "lt"} or not bounds:
            raise QueryError(f"range on {path!r}: use gte/gt/lte/lt")
        lo, hi = bounds.get("gte"), bounds.get("lte")
        for key in ("gt", "lt", "gte", "lte"):
            v = bounds.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise QueryError(f"range on {path!r}: {key} must be a finite number, got {v!r}")
        if bounds.get("gt") is not None:
            lo = math.nextafter(float(bounds["gt"]), math.inf)
        if bounds.get("lt") is not None:
            hi = math.nextafter(float(bounds["lt"]), -math.inf)
        q.ranges[field_name(path)] = (lo, hi)
        return
    raise QueryError(f"query clause {kind!r} needs the Elasticsearch backend (search.backend = "
                     "'elasticsearch'); the embedded index supports match_all, bool.filter/must, term, "
                     "terms (one value), range and sky_distance")


def translate(body: Any) -> LocusQuery:
    """An ANTARES ``elasticsearch_query`` body → a structured query (sort and limit set by the caller)."""
    q = LocusQuery()
    if body in (None, {}):
        return q
    if not isinstance(body, dict) or set(body) != {"query"}:
        raise QueryError("elasticsearch_query must be an object with only a top-level 'query' key")
    _apply(body["query"], q)
    return q
