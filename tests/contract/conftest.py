"""Backends for the contract suites: each test runs once per adapter with the same assertions.

The embedded (SQLite) parameters need nothing; the server-backed ones are marked ``integration``
and use the real Cassandra / Elasticsearch started by ``broker.ops.services.up``. Each test gets a
fresh keyspace / index of its own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from broker.alert import SURVEY_ZTF_DETECTION, SURVEY_ZTF_UPPER_LIMIT, Alert
from broker.association import association_order
from broker.locus import Locus, Provenance, make_locus_id

RADIUS_ARCSEC = 1.0
ORDER = association_order(RADIUS_ARCSEC)


@pytest.fixture(scope="session")
def cassandra_up() -> None:
    from broker.ops import services

    services.up(["cassandra"])


@pytest.fixture(scope="session")
def elasticsearch_up() -> None:
    from broker.ops import services

    services.up(["elasticsearch"])


def new_cassandra_store(keyspace: str):
    from broker.adapters.storage.cassandra import CassandraStore

    return CassandraStore(keyspace=keyspace, association_order=ORDER, outage_timeout_s=300)


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.integration)])
def store(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        from broker.adapters.storage.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "store.sqlite", ORDER)
        yield s
        s.close()
    else:
        request.getfixturevalue("cassandra_up")
        s = new_cassandra_store(f"t_{uuid.uuid4().hex[:12]}")
        yield s
        s.drop_keyspace()
        s.close()


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.integration)])
def index(request, tmp_path) -> Iterator:
    if request.param == "sqlite":
        from broker.adapters.search.sqlite import SQLiteIndex

        ix = SQLiteIndex(tmp_path / "index.sqlite")
        yield ix
        ix.close()
    else:
        request.getfixturevalue("elasticsearch_up")
        from broker.adapters.search.elasticsearch import ElasticsearchIndex

        ix = ElasticsearchIndex(index_name=f"test-{uuid.uuid4().hex[:12]}")
        yield ix
        ix.drop()
        ix.close()


def ztf_alerts(object_id: str, ra: float, dec: float, mjd0: float, n: int, seed: int) -> list[Alert]:
    """A ZTF-like light curve: detections in g/r with scatter, one upper limit without a position."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        mjd = mjd0 + 1.5 * k + float(rng.uniform(0, 0.1))
        if k == 1:
            out.append(Alert(f"ztf_upper_{object_id}_{k}", SURVEY_ZTF_UPPER_LIMIT, mjd, float("nan"), float("nan"),
                             "R", None, None, 20.4, {"ztf_fid": 2, "ztf_diffmaglim": 20.4}, object_id, True))
            continue
        band = "g" if k % 2 == 0 else "R"
        mag = float(18.0 + rng.normal(0, 0.3))
        out.append(Alert(f"ztf_candidate_{object_id}_{k}", SURVEY_ZTF_DETECTION, mjd,
                         ra + float(rng.normal(0, 1e-5)), dec + float(rng.normal(0, 1e-5)), band, mag,
                         float(0.05 + rng.uniform(0, 0.05)), 20.5,
                         {"ztf_fid": 1 if band == "g" else 2, "ztf_magpsf": mag, "ztf_field": 600 + k % 3,
                          "ztf_rcid": 12, "ztf_ssnamenr": "null", "ztf_isdiffpos": "t"},
                         object_id, k < n - 1))
    return out


def make_locus(ra: float, dec: float, *, n: int = 4, mjd0: float = 60000.0, seed: int = 0,
               tags: tuple[str, ...] = (), props: dict | None = None, name: str | None = None) -> Locus:
    """A realistic locus built the way the pipeline builds one: alerts added, properties aggregated."""
    object_id = name or f"ZTF24aa{seed:06d}"
    alerts = ztf_alerts(object_id, ra, dec, mjd0, n, seed)
    locus = Locus(make_locus_id(alerts[0].alert_id, alerts[0].mjd), ra, dec)
    locus.add_alerts(alerts)
    locus._current = Provenance("test_filter", "r1", "0.1.0", mjd0)
    for t in tags:
        locus.tag(t)
    for k, v in (props or {}).items():
        locus.set_property(k, v)
    locus._current = None
    return locus


@pytest.fixture
def locus_factory():
    """:func:`make_locus`, as a fixture so test modules need no import path tricks."""
    return make_locus
