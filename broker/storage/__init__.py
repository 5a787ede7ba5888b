"""Stores: where loci and alerts live. :func:`open_store` picks the adapter the configuration names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.storage.base import DeadLetter, Store

if TYPE_CHECKING:
    from broker.config import StoreConfig

__all__ = ["DeadLetter", "Store", "open_store"]


def open_store(cfg: StoreConfig, association_order: int) -> Store:
    """The configured store (``sqlite`` embedded default, or ``cassandra``); imports its client lazily."""
    if cfg.backend == "sqlite":
        from broker.storage.sqlite import SQLiteStore

        return SQLiteStore(cfg.path, association_order)
    if cfg.backend == "cassandra":
        from broker.storage.cassandra import CassandraStore

        return CassandraStore(cfg.cassandra_hosts, cfg.cassandra_port, cfg.keyspace, association_order,
                              cfg.consistency)
    raise ValueError(f"store.backend {cfg.backend!r}: expected 'sqlite' or 'cassandra'")
