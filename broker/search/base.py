"""The ``Index`` port: searching loci by sky position, tags and properties.

``sqlite.SQLiteIndex`` (embedded default) and ``elasticsearch.ElasticsearchIndex``
implement it and pass the same contract tests. The pipeline only calls
:meth:`Index.upsert`; the portal and API call :meth:`Index.search`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from broker.locus import Locus


class QueryError(ValueError):
    """A query the index cannot or will not run (bad shape, too large, needs another backend)."""


@dataclass
class LocusQuery:
    """A structured locus search every backend supports."""

    #: (ra_deg, dec_deg, radius_deg) cone.
    cone: tuple[float, float, float] | None = None
    #: loci must carry all of these tags.
    tags: list[str] = field(default_factory=list)
    #: property name → (low, high), inclusive; None for an open end.
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: property name → exact keyword value (e.g. ``ztf_object_id``).
    terms: dict[str, str] = field(default_factory=dict)
    #: a property name, ``-`` prefix for descending.
    sort: str = "-newest_alert_observation_time"
    limit: int = 100
    #: opaque cursor from the previous page's ``SearchResult.next_cursor``.
    search_after: list[Any] | None = None
    #: a raw Elasticsearch body (``{"query": ...}``); only the Elasticsearch backend runs it.
    raw: dict[str, Any] | None = None


@dataclass
class SearchResult:
    hits: list[dict[str, Any]]
    total: int
    next_cursor: list[Any] | None = None


def locus_document(locus: Locus) -> dict[str, Any]:
    """The one document per locus that every index stores."""
    props = locus.properties
    return {
        "locus_id": locus.locus_id,
        "ra": locus.ra,
        "dec": locus.dec,
        "tags": sorted(locus.user_tags),
        "catalogs": sorted(locus.catalog_objects),
        "properties": props,
        "num_alerts": props.get("num_alerts", len(locus.alerts)),
        "first_alert_mjd": props.get("oldest_alert_observation_time"),
        "last_alert_mjd": props.get("newest_alert_observation_time"),
        "ztf_object_id": props.get("ztf_object_id"),
        "lsst_dia_object_id": props.get("lsst_dia_object_id"),
        "grav_wave_events": list(locus.grav_wave_events_metadata),
    }


class Index(abc.ABC):
    @abc.abstractmethod
    def upsert(self, docs: list[dict[str, Any]]) -> None:
        """Insert or replace documents by ``locus_id`` (idempotent)."""

    @abc.abstractmethod
    def search(self, query: LocusQuery) -> SearchResult:
        """Run a structured (or, where supported, raw) query."""

    @abc.abstractmethod
    def get(self, locus_id: str) -> dict[str, Any] | None:
        """One document by id."""

    @abc.abstractmethod
    def tag_counts(self) -> dict[str, int]:
        """How many loci carry each tag."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many documents the index holds."""

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Make recent writes visible to searches (Elasticsearch refresh)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
