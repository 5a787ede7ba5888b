"""Store migrations on the real Cassandra: an upgraded keyspace keeps finding what it stored before.

Migration 8 moved the "already stored?" check from one partition per alert (``alerts``) to one per
survey object (``alert_ids_by_object``). Migration 9 moved light curves from one row per alert
(``alerts_by_locus``) to one block per locus and batch (``alert_blocks``). A keyspace written by
the code before them has only the old rows; their data steps rewrite them, so after the upgrade a
replay is still recognised as one (no duplicated alerts) and every light curve reads back whole.

Each test builds the keyspace the older code left (its rows written with that code's statements)
and removes the later migrations' marks, then opens it with the current code.
"""

from __future__ import annotations

import math
import uuid

import pytest

from tests.contract.conftest import ORDER, make_locus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cassandra_up() -> None:
    from broker.ops import services

    services.up(["cassandra"])


def _as_before_migration(store, loci, first_missing: int) -> None:
    """Make ``store``'s keyspace what the code before migration ``first_missing`` left for ``loci``.

    Loci rows stay (their format did not change); alerts become per-alert ``alerts_by_locus``
    rows, written as that code wrote them (NaN as null, properties as JSON text); before
    migration 8 every alert also had its per-id ``alerts`` row and no per-object row.
    """
    from broker.adapters.storage.cassandra import _ALERT_COLS, SCHEMA_VERSION
    from broker.jsonutil import dumps

    def nan_none(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    sess = store._session
    ins = sess.prepare(f"INSERT INTO alerts_by_locus ({', '.join(_ALERT_COLS)}) VALUES ({','.join('?' * len(_ALERT_COLS))})")
    for x in loci:
        for a in x.alerts:
            sess.execute(ins, (x.locus_id, a.mjd, a.alert_id, a.survey, nan_none(a.ra), nan_none(a.dec), a.passband,
                               nan_none(a.mag), nan_none(a.magerr), nan_none(a.maglim), a.object_id,
                               bool(a.is_history), dumps(a.properties)))
            if first_missing <= 8:
                sess.execute("INSERT INTO alerts (alert_id, locus_id, mjd) VALUES (%s, %s, %s)",
                             (a.alert_id, x.locus_id, a.mjd))
    sess.execute("TRUNCATE alert_blocks")
    if first_missing <= 8:
        sess.execute("TRUNCATE alert_ids_by_object")
    for v in range(first_missing, SCHEMA_VERSION + 1):
        sess.execute("DELETE FROM schema_version WHERE component='store' AND version=%s", (v,))


def _same_alerts(got, want) -> None:
    assert [a.alert_id for a in got] == [a.alert_id for a in sorted(want, key=lambda a: (a.mjd, a.alert_id))]
    by_id = {a.alert_id: a for a in want}
    for a in got:
        b = by_id[a.alert_id]
        assert (a.mjd, a.survey, a.passband, a.object_id, a.is_history) == (b.mjd, b.survey, b.passband, b.object_id,
                                                                             b.is_history)
        assert a.properties == b.properties
        for f in ("mag", "magerr", "maglim", "ra", "dec"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or (x is not None and y is not None and (x == y or math.isnan(x) and math.isnan(y))), f


def test_migration_8_indexes_alerts_stored_before_it(cassandra_up):
    from broker.adapters.storage.cassandra import SCHEMA_VERSION, CassandraStore

    ks = f"mig_{uuid.uuid4().hex[:10]}"
    s = CassandraStore(keyspace=ks, association_order=ORDER)
    try:
        loci = [make_locus(30.0 + i, 5.0, seed=60 + i) for i in range(3)]
        s.save_batch(loci, [a for x in loci for a in x.alerts])
        alerts = [a for x in loci for a in x.alerts]
        assert s.existing_alert_ids(alerts) == {a.alert_id for a in alerts}
        _as_before_migration(s, loci, 8)
        assert s.existing_alert_ids(alerts) == set()  # what the new check would see without the data step
        s.close()

        s = CassandraStore(keyspace=ks, association_order=ORDER)
        assert s.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        assert s.existing_alert_ids(alerts) == {a.alert_id for a in alerts}
    finally:
        s.drop_keyspace()
        s.close()


def test_migration_9_rewrites_per_alert_rows_as_blocks(cassandra_up):
    from broker.adapters.storage.cassandra import SCHEMA_VERSION, CassandraStore, _block_stored_alerts

    ks = f"mig_{uuid.uuid4().hex[:10]}"
    s = CassandraStore(keyspace=ks, association_order=ORDER)
    try:
        loci = [make_locus(40.0 + i, -7.0, n=4 + 3 * i, seed=70 + i) for i in range(4)]
        alerts = [a for x in loci for a in x.alerts]
        s.save_batch(loci, alerts)
        expected_counts = s.counts()
        assert expected_counts["alerts"] == len(alerts)
        _as_before_migration(s, loci, 9)
        assert all(x.alerts == [] for x in s.load_loci([x.locus_id for x in loci]).values())  # blocks gone
        s.close()

        s = CassandraStore(keyspace=ks, association_order=ORDER)
        assert s.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        got = s.load_loci([x.locus_id for x in loci])
        for x in loci:
            _same_alerts(got[x.locus_id].alerts, x.alerts)
            _same_alerts(s.alerts_for_locus(x.locus_id), x.alerts)
        assert s.counts() == expected_counts
        blocks = list(s._session.execute("SELECT locus_id, block_id FROM alert_blocks"))
        assert len(blocks) == len(loci)  # one block per locus, not one row per alert
        # the data step again (an interrupted upgrade run twice) writes the same rows
        _block_stored_alerts(s._session, ks)
        assert sorted(blocks) == sorted(s._session.execute("SELECT locus_id, block_id FROM alert_blocks"))
        assert s.counts() == expected_counts
    finally:
        s.drop_keyspace()
        s.close()
