"""Store migrations on the real Cassandra: an upgraded keyspace keeps finding what it stored before.

Migration 8 moved the "already stored?" check from one partition per alert (``alerts``) to one per
survey object (``alert_ids_by_object``). A keyspace written by the code before it has only the
per-alert rows; its data step indexes them by object, so a replay after the upgrade is still
recognised as a replay (no duplicated alerts).
"""

from __future__ import annotations

import uuid

import pytest

from tests.contract.conftest import ORDER, make_locus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cassandra_up() -> None:
    from broker.ops import services

    services.up(["cassandra"])


def test_migration_8_indexes_alerts_stored_before_it(cassandra_up):
    from broker.adapters.storage.cassandra import SCHEMA_VERSION, CassandraStore

    ks = f"mig_{uuid.uuid4().hex[:10]}"
    s = CassandraStore(keyspace=ks, association_order=ORDER)
    try:
        loci = [make_locus(30.0 + i, 5.0, seed=60 + i) for i in range(3)]
        s.save_batch(loci, [a for x in loci for a in x.alerts])
        alerts = [a for x in loci for a in x.alerts]
        assert s.existing_alert_ids(alerts) == {a.alert_id for a in alerts}
        # Make it the keyspace the previous code left: per-alert rows only, migration 8 not applied.
        sess = s._session
        for a in alerts:
            sess.execute("INSERT INTO alerts (alert_id, locus_id, mjd) VALUES (%s, %s, %s)",
                         (a.alert_id, a.locus_id, a.mjd))
        sess.execute("TRUNCATE alert_ids_by_object")
        sess.execute("DELETE FROM schema_version WHERE component='store' AND version=8")
        assert s.existing_alert_ids(alerts) == set()  # what the new check would see without the data step
        s.close()

        s = CassandraStore(keyspace=ks, association_order=ORDER)
        assert s.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        assert s.existing_alert_ids(alerts) == {a.alert_id for a in alerts}
    finally:
        s.drop_keyspace()
        s.close()
