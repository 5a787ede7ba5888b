"""One search entry point for the API and the portal: ES body or form fields → index query."""

from __future__ import annotations

from typing import Any

from broker.ports import LocusQuery, SearchResult
from web.backend import Backend
from web.esquery import sort_name

DEFAULT_SORT = "-newest_alert_observation_time"


def query_from_body(b: Backend, body: Any) -> LocusQuery:
    """The body as sent, for either backend: Elasticsearch runs it, the embedded index evaluates it
    (``broker.adapters.search.dsl``), and both refuse what they do not support with a QueryError (400)."""
    if body in (None, {}):
        return LocusQuery()
    return LocusQuery(raw=body)


def run(b: Backend, query: LocusQuery, sort: str | None, limit: int, cursor: list[Any] | None) -> SearchResult:
    query.sort = sort_name(sort) if sort else DEFAULT_SORT
    query.limit = limit
    query.search_after = cursor
    return b.index.search(query)
