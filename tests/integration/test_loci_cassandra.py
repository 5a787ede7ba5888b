"""Moving loci on the real Cassandra: the long-lived-sources replay gives the store SQLite gives.

The same time-ordered stream of recurring real sources as ``tests/unit/test_one_object_one_locus.py``
goes through the pipeline twice, once per store; the loci (ids, positions to the bit, alerts,
properties) must be equal, every locus must be found once, where it now stands, by an association
lookup of its pixel block (its position row moved with it), and a replay must change nothing.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from broker.adapters.streams.files import StreamFileSink
from broker.assemble import build_pipeline
from broker.association import Associator, neighbour_block, pixels_of
from broker.config import load_config
from tests.unit import test_one_object_one_locus as recurring
from tests.unit.test_one_object_one_locus import _pipeline, _run, _snapshot

pytestmark = pytest.mark.integration

#: the stream of recurring real sources the unit test builds (its fixtures, shared)
devkit_stream = recurring.devkit_stream
long_lived = recurring.long_lived


@pytest.fixture
def cassandra_store(cassandra_up):
    from broker.adapters.storage.cassandra import CassandraStore

    cfg = load_config(env={})
    s = CassandraStore(keyspace=f"ll_{uuid.uuid4().hex[:10]}", association_order=Associator.from_config(
        cfg.association).order)
    yield s
    s.drop_keyspace()
    s.close()


@pytest.fixture(scope="session")
def cassandra_up() -> None:
    from broker.ops import services

    services.up(["cassandra"])


def test_long_lived_replay_on_cassandra_equals_sqlite(tmp_path, long_lived, cassandra_store):
    path, label, _ = long_lived
    sqlite_store, sqlite_pipe = _pipeline(tmp_path, "ref")
    _run(sqlite_pipe, [path], batch_size=64)
    want = _snapshot(sqlite_store)

    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    cfg.filters.builtin = []
    pipe = build_pipeline(cfg, cassandra_store, StreamFileSink(tmp_path / "out"),
                          associator=Associator.from_config(cfg.association))
    res = _run(pipe, [path], batch_size=64)
    assert res.alerts_new == len(label)
    got = _snapshot(cassandra_store)
    assert got == want
    counts = cassandra_store.counts()
    assert (counts["loci"], counts["alerts"]) == (len(want), len(label))

    order = cassandra_store.association_order
    for lid, (ra, dec, _, _) in got.items():
        block = neighbour_block(pixels_of(np.array([ra]), np.array([dec]), order), order)
        pos = cassandra_store.locus_positions(block[block >= 0].tolist())
        rows = [i for i, x in enumerate(pos.locus_ids) if x == lid]
        assert len(rows) == 1, lid  # one position row, not one per pixel it ever stood in
        assert (pos.ra[rows[0]], pos.dec[rows[0]]) == (ra, dec)

    again = _run(pipe, [path], batch_size=64)
    assert again.alerts_new == 0 and _snapshot(cassandra_store) == want
