"""The FAIR catalog's part of the Store contract, on every adapter alike: versions are write-once.

A record version or a catalog version is inserted once; writing the same bytes again is a no-op,
writing other content under the same key is refused (``CatalogConflict``) and leaves the stored
version as it was; versions come back in order. Two processes racing to publish the same number:
exactly one wins (SQLite's writer lock, Cassandra's lightweight transaction).
"""

from __future__ import annotations

import multiprocessing as mp

import pytest

from broker.ports import CatalogConflict


def _rec(event_id: str, version: int, **extra) -> dict:
    return {"event_id": event_id, "version": version, "pid": f"albireo:event/{event_id}/v{version}",
            "ra": 31.0, "dec": 21.0 + version, "associations": [{"locus_id": "ALB1", "contour_level": 12.5}],
            "provenance": {"notice_id": f"n{version}"}, **extra}


def test_record_versions_are_write_once_and_ordered(store):
    assert store.catalog_records("IceCube-1") == []
    for v in (2, 1, 3):
        assert store.put_catalog_record(_rec("IceCube-1", v)) is True
    assert store.put_catalog_record(_rec("S230518h", 1)) is True
    assert [r["version"] for r in store.catalog_records("IceCube-1")] == [1, 2, 3]
    assert store.put_catalog_record(_rec("IceCube-1", 2)) is False  # a replay: the same bytes
    with pytest.raises(CatalogConflict):
        store.put_catalog_record(_rec("IceCube-1", 2, ra=0.0))
    assert store.catalog_records("IceCube-1")[1] == _rec("IceCube-1", 2)
    assert [r["event_id"] for r in store.catalog_records("S230518h")] == ["S230518h"]


def test_releases_are_write_once_and_ordered(store):
    assert store.catalog_releases() == []
    r1 = {"version": 1, "members": [["IceCube-1", 1]], "published": "2026-01-01T00:00:00Z"}
    r2 = {"version": 2, "members": [["IceCube-1", 2], ["S230518h", 1]], "published": "2026-02-01T00:00:00Z"}
    assert store.put_catalog_release(r2) and store.put_catalog_release(r1)
    assert store.catalog_releases() == [r1, r2]
    assert store.put_catalog_release(r1) is False
    with pytest.raises(CatalogConflict):
        store.put_catalog_release(dict(r1, members=[]))
    assert store.catalog_releases()[0] == r1


def _race(kind: str, where: str, n: int, q) -> None:
    from broker.adapters.storage.sqlite import SQLiteStore
    from tests.contract.conftest import ORDER, new_cassandra_store

    s = SQLiteStore(where, ORDER) if kind == "sqlite" else new_cassandra_store(where)
    try:
        s.put_catalog_release({"version": 7, "members": [], "by": n})
        q.put("won")
    except CatalogConflict:
        q.put("lost")
    finally:
        s.close()


def test_two_publishers_racing_for_one_number_one_wins(store, tmp_path):
    kind = "sqlite" if hasattr(store, "path") else "cassandra"
    where = store.path if kind == "sqlite" else store.keyspace
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(kind, where, n, q)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results == ["lost", "lost", "won"]
    (rel,) = store.catalog_releases()
    assert rel["version"] == 7 and rel["by"] in (0, 1, 2)
