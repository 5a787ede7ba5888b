"""The production index: one Elasticsearch document per locus.

Mapping (explicit, so every locus indexes the same way):

* ``location`` is a ``geo_point`` (lat = Dec, lon = RA wrapped to ±180°). Elasticsearch's
  ``geo_distance`` is a haversine on a sphere of radius :data:`EARTH_RADIUS_M`, so an angular
  radius θ (radians) is the distance θ·R metres exactly; the sky is that sphere.
* filter-set ``properties`` go through dynamic templates — numbers → ``double``, strings →
  ``keyword`` — with ``ignore_malformed`` so a property that is a number on one locus and a
  string on another still indexes (the odd value stays in ``_source`` but is not searchable).

Cone searches are *exact*: Lucene quantises points to ~1e-7° and its haversine is a fast
approximation, so the index is asked for a slightly wider cone and every hit is re-checked with
the exact great-circle distance (the cursor advances over the hits examined, so pages stay exact
too). ``total`` is made exact the same way, by re-checking the thin band between the inner and
outer cones.

Raw bodies (``LocusQuery.raw``) are validated: only a top-level ``query``; a size cap; no script,
wrapper, percolate or runtime mapping anywhere; ANTARES's ``sky_distance`` is translated to
``geo_distance``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from broker.adapters.search import query as q
from broker.adapters.search.query import DocumentsRejected
from broker.adapters.search.sky import angular_distance_deg, geo_point, parse_sky_distance
from broker.jsonutil import dumps, strict
from broker.ports import EventQuery, Index, IndexSummary, LocusQuery, QueryError, SearchResult

#: Elasticsearch's ``GeoUtils.EARTH_MEAN_RADIUS`` (metres), the sphere geo_distance measures on.
EARTH_RADIUS_M = 6371008.7714
#: widen cones by this fraction (plus :data:`_MARGIN_ABS_DEG`) before the exact re-check.
_MARGIN_REL = 1e-3
_MARGIN_ABS_DEG = 1e-6
#: raw bodies larger than this (serialised) are refused.
MAX_RAW_BYTES = 64 * 1024
MAX_RAW_DEPTH = 32
_FORBIDDEN_KEYS = frozenset({
    "script", "scripts", "script_score", "script_fields", "stored_fields", "runtime_mappings", "wrapper",
    "percolate", "scripted_metric", "aggs", "aggregations", "_source", "docvalue_fields",
})

MAPPING: dict[str, Any] = {
    "dynamic": False,
    "dynamic_templates": [
        {"property_integers": {"path_match": "properties.*", "match_mapping_type": "long",
                               "mapping": {"type": "double"}}},
        {"property_numbers": {"path_match": "properties.*", "match_mapping_type": "double",
                              "mapping": {"type": "double"}}},
        {"property_strings": {"path_match": "properties.*", "match_mapping_type": "string",
                              "mapping": {"type": "keyword", "ignore_above": 1024}}},
    ],
    "properties": {
        "locus_id": {"type": "keyword"},
        "ra": {"type": "double"},
        "dec": {"type": "double"},
        "location": {"type": "geo_point"},
        "tags": {"type": "keyword"},
        "catalogs": {"type": "keyword"},
        "properties": {"type": "object", "dynamic": True},
        "num_alerts": {"type": "long"},
        "first_alert_mjd": {"type": "double"},
        "last_alert_mjd": {"type": "double"},
        "ztf_object_id": {"type": "keyword"},
        "lsst_dia_object_id": {"type": "keyword"},
        "grav_wave_events": {"type": "keyword"},
        "neutrino_events": {"type": "keyword"},
        "events": {"type": "keyword"},
        #: HEALPix nested pixel at ``query.PIXEL_ORDER``: region (credible-region MOC) queries are ranges on it.
        "pixel16": {"type": "long"},
    },
}
#: the events index (``<index_name>-events``): one document per multi-messenger event.
EVENTS_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "event_id": {"type": "keyword"}, "name": {"type": "keyword"}, "messenger": {"type": "keyword"},
        "mission": {"type": "keyword"}, "status": {"type": "keyword"}, "test": {"type": "boolean"},
        "event_mjd": {"type": "double"}, "area90": {"type": "double"}, "far": {"type": "double"},
    },
}
SETTINGS: dict[str, Any] = {
    "number_of_shards": 1,
    "number_of_replicas": 0,
    "refresh_interval": "1s",
    "mapping": {"total_fields": {"limit": 5000}, "ignore_malformed": True},
}


def angle_to_metres(radius_deg: float) -> float:
    return math.radians(radius_deg) * EARTH_RADIUS_M


def _margin(radius_deg: float) -> float:
    return radius_deg * _MARGIN_REL + _MARGIN_ABS_DEG


def _geo_filter(ra: float, dec: float, radius_deg: float) -> dict[str, Any]:
    return {"geo_distance": {"distance": f"{angle_to_metres(radius_deg):.6f}m", "distance_type": "arc",
                             "location": geo_point(ra, dec)}}


def validate_raw(body: Any) -> tuple[dict[str, Any], list[tuple[float, float, float]]]:
    """Check a raw body and translate ``sky_distance``; returns (query clause, cones that must hold).

    A ``sky_distance`` reached only through ``bool.must``/``bool.filter`` must hold for every hit:
    it is widened and re-checked exactly like a structured cone. Elsewhere (``should``,
    ``must_not``) it is translated at its exact radius.
    """
    if not isinstance(body, dict) or set(body) != {"query"}:
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise QueryError(f"raw query body must be an object with only a top-level 'query' key (got {keys}); "
                         "size, sort and paging come from the request")
    if len(dumps(body)) > MAX_RAW_BYTES:
        raise QueryError(f"raw query body larger than {MAX_RAW_BYTES} bytes")
    cones: list[tuple[float, float, float]] = []

    def walk(node: Any, depth: int, positive: bool) -> Any:
        if depth > MAX_RAW_DEPTH:
            raise QueryError(f"raw query nested deeper than {MAX_RAW_DEPTH} levels")
        if isinstance(node, list):
            return [walk(x, depth + 1, positive) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise QueryError("raw query keys must be strings")
            if key in _FORBIDDEN_KEYS:
                raise QueryError(f"raw query may not contain {key!r} (scripts, wrappers, percolation and "
                                 "aggregations are not allowed)")
            if key == "terms" and isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
                raise QueryError("terms lookups (terms with an index/id object) are not allowed")
            if key == "sky_distance":
                ra, dec, radius = parse_sky_distance(value)
                if positive:
                    cones.append((ra, dec, radius))
                    return _geo_filter(ra, dec, radius + _margin(radius)) | (
                        {} if len(node) == 1 else _reject_siblings(node))
                return _geo_filter(ra, dec, radius) | ({} if len(node) == 1 else _reject_siblings(node))
            if key == "bool" and isinstance(value, dict):
                out[key] = {k: walk(v, depth + 1, positive and k in ("must", "filter")) for k, v in value.items()}
            else:
                out[key] = walk(value, depth + 1, False)
        return out

    return walk(body["query"], 0, True), cones


def _reject_siblings(node: dict[str, Any]) -> dict[str, Any]:
    raise QueryError(f"sky_distance must be alone in its clause, found {sorted(node)}")


class ElasticsearchIndex(Index):
    """Locus documents in one Elasticsearch index (created with :data:`MAPPING` if missing)."""

    def __init__(self, url: str = "http://127.0.0.1:9200", index_name: str = "albireo-loci",
                 request_timeout: float = 30.0, create: bool = True):
        from elasticsearch import Elasticsearch

        self.url = url
        self.name = index_name
        self._es = Elasticsearch(url, request_timeout=request_timeout, retry_on_timeout=True, max_retries=2)
        if create:
            self.ensure_index()

    # -- administration ----------------------------------------------------------------------
    @property
    def events_name(self) -> str:
        return f"{self.name}-events"

    def ensure_index(self) -> None:
        """Create the locus and events indexes when missing; add fields newer code maps to an older index."""
        from elasticsearch import BadRequestError

        for name, mappings in ((self.name, MAPPING), (self.events_name, EVENTS_MAPPING)):
            if self._es.indices.exists(index=name):
                have = self._es.indices.get_mapping(index=name)[name]["mappings"].get("properties", {})
                missing = {k: v for k, v in mappings["properties"].items() if k not in have}
                if missing:  # additive: documents indexed before keep working, new ones get the fields
                    self._es.indices.put_mapping(index=name, properties=missing)
                continue
            try:
                self._es.indices.create(index=name, settings=SETTINGS, mappings=mappings)
            except BadRequestError as exc:  # created concurrently by another worker
                if "resource_already_exists_exception" not in str(exc):
                    raise

    def drop(self) -> None:
        """Delete the whole index and its events index (tests and re-indexing)."""
        self._es.indices.delete(index=self.name, ignore_unavailable=True)
        self._es.indices.delete(index=self.events_name, ignore_unavailable=True)

    def refresh(self) -> None:
        self._es.indices.refresh(index=self.name)
        self._es.indices.refresh(index=self.events_name, ignore_unavailable=True)

    def close(self) -> None:
        self._es.close()

    # -- writes --------------------------------------------------------------------------
    def upsert(self, docs: list[dict[str, Any]]) -> None:
        """Bulk-index ``docs`` by locus id.

        Connection and server errors raise (the outbox keeps the documents and retries); a
        document refused for its content is retried once without the fields Elasticsearch named,
        and if still refused is reported in :class:`DocumentsRejected` after the rest are written.
        """
        from broker.association import pixels_of

        pending = {}
        pix = pixels_of([float(d["ra"]) for d in docs], [float(d["dec"]) for d in docs], q.PIXEL_ORDER)
        for d, p in zip(docs, pix.tolist(), strict=True):
            src = strict(d)
            src["location"] = geo_point(float(d["ra"]), float(d["dec"]))
            src["pixel16"] = int(p)
            pending[d["locus_id"]] = src
        rejected: dict[str, str] = {}
        for attempt in range(3):
            if not pending:
                break
            failures = self._bulk(pending)
            retry = {}
            for lid, (status, reason) in failures.items():
                if status == 429 or status >= 500:
                    raise ConnectionError(f"elasticsearch bulk: {lid}: HTTP {status} {reason}")
                fields = re.findall(r"failed to parse field \[([^\]]+)\]", reason)
                if attempt < 2 and fields and fields[0].startswith("properties."):
                    src = pending[lid]
                    _drop_path(src, fields[0])
                    retry[lid] = src
                else:
                    rejected[lid] = f"HTTP {status}: {reason}"
            pending = retry
        if rejected:
            raise DocumentsRejected(rejected)

    def _bulk(self, docs: dict[str, dict[str, Any]]) -> dict[str, tuple[int, str]]:
        ops: list[dict[str, Any]] = []
        for lid, src in docs.items():
            ops.append({"index": {"_index": self.name, "_id": lid}})
            ops.append(src)
        resp = self._es.bulk(operations=ops)
        failures: dict[str, tuple[int, str]] = {}
        if resp.get("errors"):
            for item in resp["items"]:
                res = item.get("index", {})
                if res.get("error"):
                    err = res["error"]
                    reason = f"{err.get('type')}: {err.get('reason')}"
                    cause = err.get("caused_by")
                    if cause:
                        reason += f" ({cause.get('type')}: {cause.get('reason')})"
                    failures[res["_id"]] = (int(res.get("status", 400)), reason)
        return failures

    # -- reads ---------------------------------------------------------------------------
    def get(self, locus_id: str) -> dict[str, Any] | None:
        from elasticsearch import NotFoundError

        try:
            src = self._es.get(index=self.name, id=locus_id)["_source"]
        except NotFoundError:
            return None
        src.pop("location", None)
        return src

    def count(self) -> int:
        return int(self._es.count(index=self.name)["count"])

    def summary(self) -> IndexSummary:
        resp = self._es.search(index=self.name, size=0, track_total_hits=True, aggs={
            "tags": {"terms": {"field": "tags", "size": 10000}},
            "catalogs": {"terms": {"field": "catalogs", "size": 1000}},
            "events": {"terms": {"field": "events", "size": 10000}},
            "lo": {"min": {"field": "num_alerts"}}, "hi": {"max": {"field": "num_alerts"}}})
        aggs = resp["aggregations"]

        def buckets(name: str) -> dict[str, int]:
            return {b["key"]: b["doc_count"] for b in sorted(aggs[name]["buckets"], key=lambda b: b["key"])}

        return IndexSummary(count=int(resp["hits"]["total"]["value"]), tags=buckets("tags"),
                            catalogs=buckets("catalogs"), events=buckets("events"),
                            min_num_alerts=int(aggs["lo"]["value"] or 0), max_num_alerts=int(aggs["hi"]["value"] or 0))

    def tag_counts(self) -> dict[str, int]:
        resp = self._es.search(index=self.name, size=0, aggs={"tags": {"terms": {"field": "tags", "size": 10000}}})
        return {b["key"]: b["doc_count"] for b in sorted(resp["aggregations"]["tags"]["buckets"],
                                                          key=lambda b: b["key"])}

    def random_ids(self, n: int, seed: int | None = None) -> list[str]:
        n = q.check_sample_size(n)
        if n == 0:
            return []
        score: dict[str, Any] = {} if seed is None else {"seed": int(seed), "field": "_seq_no"}
        resp = self._es.search(index=self.name, size=n, source=["locus_id"],
                               query={"function_score": {"query": {"match_all": {}}, "random_score": score,
                                                         "boost_mode": "replace"}})
        return [h["_source"]["locus_id"] for h in resp["hits"]["hits"]]

    def search(self, query: LocusQuery) -> SearchResult:
        q.check(query)
        filters: list[dict[str, Any]] = []
        cones: list[tuple[float, float, float]] = []
        if query.raw is not None:
            clause, raw_cones = validate_raw(query.raw)
            filters.append(clause)
            cones += raw_cones
        if query.cone is not None:
            ra, dec, radius = query.cone
            cones.append((ra, dec, radius))
            filters.append(_geo_filter(ra, dec, radius + _margin(radius)))
        for tag in dict.fromkeys(query.tags):
            filters.append({"term": {"tags": tag}})
        if query.region is not None:
            ranges = q.region_ranges_at(query.region, q.PIXEL_ORDER)
            filters.append({"bool": {"should": [{"range": {"pixel16": {"gte": lo, "lt": hi}}} for lo, hi in ranges]
                                     or [{"match_none": {}}], "minimum_should_match": 1}})
        for event in dict.fromkeys(query.events):
            # documents written before ``events`` existed list their GW events only
            filters.append({"bool": {"should": [{"term": {"events": event}}, {"term": {"grav_wave_events": event}}],
                                     "minimum_should_match": 1}})
        for name, (lo, hi) in query.ranges.items():
            bounds = {k: v for k, v in (("gte", lo), ("lte", hi)) if v is not None}
            filters.append({"range": {q.field_path(name): bounds}} if bounds
                           else {"exists": {"field": q.field_path(name)}})
        for name, value in query.terms.items():
            filters.append({"term": {q.field_path(name): value}})
        es_query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        name, desc = q.parse_sort(query.sort)
        sort = [
            {q.field_path(name): {"order": "desc" if desc else "asc", "missing": "_last",
                                  "unmapped_type": "double"}},
            {"locus_id": "asc"},
        ]
        return self._paged(es_query, sort, query, cones)

    def _paged(self, es_query: dict[str, Any], sort: list[dict[str, Any]], query: LocusQuery,
               cones: list[tuple[float, float, float]]) -> SearchResult:
        hits: list[dict[str, Any]] = []
        cursor = list(query.search_after) if query.search_after is not None else None
        total: int | None = None
        while len(hits) < query.limit or (query.limit == 0 and total is None):
            want = query.limit - len(hits)
            fetch = max(want + (want // 4 + 5 if cones else 0), 1) if query.limit else 0
            kwargs: dict[str, Any] = {"index": self.name, "query": es_query, "sort": sort, "size": fetch,
                                      "track_total_hits": total is None}
            if cursor is not None:
                kwargs["search_after"] = cursor
            resp = self._es.search(**kwargs)
            if total is None:
                total = int(resp["hits"]["total"]["value"])
            page = resp["hits"]["hits"]
            for h in page:
                src = h["_source"]
                if cones and not all(
                    float(angular_distance_deg(src["ra"], src["dec"], ra, dec)) <= r for ra, dec, r in cones
                ):
                    cursor = h["sort"]
                    continue
                src.pop("location", None)
                hits.append(src)
                cursor = h["sort"]
                if len(hits) == query.limit:
                    break
            if len(page) < fetch or query.limit == 0:
                break
        if cones and total:
            total -= self._band_failures(es_query, cones)
        next_cursor = cursor if query.limit and len(hits) == query.limit else None
        return SearchResult(hits=hits, total=total or 0, next_cursor=next_cursor)

    # -- multi-messenger events -----------------------------------------------------------
    def upsert_events(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        ops: list[dict[str, Any]] = []
        for d in docs:
            ops.append({"index": {"_index": self.events_name, "_id": d["event_id"]}})
            ops.append(strict(d))
        resp = self._es.bulk(operations=ops)
        if resp.get("errors"):
            bad = {i["index"]["_id"]: f"{i['index']['error'].get('type')}: {i['index']['error'].get('reason')}"
                   for i in resp["items"] if i.get("index", {}).get("error")}
            if any(int(i["index"].get("status", 400)) >= 500 or int(i["index"].get("status", 400)) == 429
                   for i in resp["items"] if i.get("index", {}).get("error")):
                raise ConnectionError(f"elasticsearch bulk (events): {bad}")
            raise DocumentsRejected(bad)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        from elasticsearch import NotFoundError

        try:
            return self._es.get(index=self.events_name, id=event_id)["_source"]
        except NotFoundError:
            return None

    def search_events(self, query: EventQuery) -> SearchResult:
        q.check_events(query)
        filters: list[dict[str, Any]] = []
        for name in ("messenger", "status"):
            if getattr(query, name) is not None:
                filters.append({"term": {name: getattr(query, name)}})
        if not query.include_test:
            filters.append({"term": {"test": False}})
        bounds = {k: v for k, v in (("gte", query.since_mjd), ("lte", query.until_mjd)) if v is not None}
        if bounds:
            filters.append({"range": {"event_mjd": bounds}})
        resp = self._es.search(index=self.events_name, query={"bool": {"filter": filters}}, size=query.limit,
                               sort=[{"event_mjd": {"order": "desc", "missing": "_last"}}, {"event_id": "asc"}],
                               track_total_hits=True)
        return SearchResult(hits=[h["_source"] for h in resp["hits"]["hits"]],
                            total=int(resp["hits"]["total"]["value"]))

    def _band_failures(self, es_query: dict[str, Any], cones: list[tuple[float, float, float]]) -> int:
        """How many of the widened-cone matches lie outside the exact cones (the thin edge band)."""
        inner = [_geo_filter(ra, dec, max(r - _margin(r), 0.0)) for ra, dec, r in cones]
        band = {"bool": {"filter": [es_query], "must_not": [{"bool": {"filter": inner}}]}}
        failures = 0
        cursor = None
        while True:
            kwargs: dict[str, Any] = {"index": self.name, "query": band, "size": 1000,
                                      "sort": [{"locus_id": "asc"}], "_source": ["ra", "dec"]}
            if cursor is not None:
                kwargs["search_after"] = cursor
            page = self._es.search(**kwargs)["hits"]["hits"]
            for h in page:
                s = h["_source"]
                if not all(float(angular_distance_deg(s["ra"], s["dec"], ra, dec)) <= r for ra, dec, r in cones):
                    failures += 1
            if len(page) < 1000:
                return failures
            cursor = page[-1]["sort"]


def _drop_path(doc: dict[str, Any], path: str) -> None:
    """Remove ``a.b.c`` from a nested document (the field Elasticsearch refused)."""
    parts = path.split(".")
    node: Any = doc
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return
        node = node[p]
    if isinstance(node, dict):
        node.pop(parts[-1], None)
