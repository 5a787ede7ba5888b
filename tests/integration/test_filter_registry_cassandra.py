"""The filter registry on the real Cassandra store: the same revision lifecycle as on SQLite."""

from __future__ import annotations

import uuid

import pytest

from broker.filtering import registry as reg
from broker.ops import services
from tests.unit.test_filter_sandbox import GOOD, filter_code

pytestmark = pytest.mark.integration


@pytest.fixture()
def store():
    from broker.adapters.storage.cassandra import CassandraStore

    services.up(["cassandra"])
    s = CassandraStore(keyspace=f"filters_{uuid.uuid4().hex[:8]}", association_order=15)
    yield s
    s.drop_keyspace()
    s.close()


def test_revisions_statuses_and_enabled_specs_on_cassandra(store):
    a = reg.add_revision(store, GOOD, "alice")
    b = reg.add_revision(store, GOOD + "\n# v2\n", "bob", priority=7)
    assert [r["revision"] for r in store.list_filter_revisions("Good")] == [a["revision"], b["revision"]]
    assert store.list_filter_revisions("Good")[0]["meta"]["class"] == "Good"
    with pytest.raises(reg.NotApproved, match="has not been approved"):
        reg.set_status(store, "Good", "enabled", a["revision"])
    rv = reg.review(store, "Good", "approved", "olga", a["revision"], "checked")
    assert rv["status"] == "approved" and (rv["review"]["by"], rv["review"]["note"]) == ("olga", "checked")
    reg.review(store, "Good", "approved", "olga", b["revision"])
    reg.set_status(store, "Good", "enabled", a["revision"])
    reg.set_status(store, "Good", "enabled", b["revision"])
    statuses = {r["revision"]: r["status"] for r in store.list_filter_revisions("Good")}
    assert statuses == {a["revision"]: "disabled", b["revision"]: "enabled"}
    (spec,) = reg.enabled_specs(store)
    assert (spec.name, spec.revision, spec.priority, spec.code) == ("Good", b["revision"], 7, GOOD + "\n# v2\n")
    # the code-only table the store already had is filled too
    assert {r["revision"] for r in store.filter_revisions("Good")} == {a["revision"], b["revision"]}
    with pytest.raises(KeyError):
        store.set_filter_status("Good", "nope", "enabled")
    other = reg.add_revision(store, filter_code("Other", "        pass"), "carol")
    assert [r["name"] for r in reg.list_filters(store)] == ["Good", "Other"]
    assert other["status"] == "submitted"
    rejected = reg.review(store, "Other", "rejected", "olga", note="no docstring")
    assert rejected["status"] == "rejected"
    assert store.list_filter_revisions("Other")[0]["meta"]["review"]["note"] == "no docstring"
    with pytest.raises(reg.NotApproved, match="rejected by olga"):
        reg.set_status(store, "Other", "enabled")
