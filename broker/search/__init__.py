"""Locus search indexes. :func:`open_index` picks the adapter the configuration names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.search.base import Index, LocusQuery, QueryError, SearchResult, locus_document

if TYPE_CHECKING:
    from broker.config import SearchConfig

__all__ = ["Index", "LocusQuery", "QueryError", "SearchResult", "locus_document", "open_index"]


def open_index(cfg: SearchConfig) -> Index:
    """The configured index (``sqlite`` embedded default, or ``elasticsearch``); imports its client lazily."""
    if cfg.backend == "sqlite":
        from broker.search.sqlite import SQLiteIndex

        return SQLiteIndex(cfg.path)
    if cfg.backend == "elasticsearch":
        from broker.search.elasticsearch import ElasticsearchIndex

        return ElasticsearchIndex(cfg.elasticsearch_url, cfg.index_name)
    raise ValueError(f"search.backend {cfg.backend!r}: expected 'sqlite' or 'elasticsearch'")
