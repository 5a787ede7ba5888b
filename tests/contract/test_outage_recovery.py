"""Restarting the real Elasticsearch server while documents flow through the outbox loses none.

A producer thread keeps queueing locus documents while the real server is stopped and started
again (``broker.ops.services.down``/``up``); the drainer backs off during the outage and, once the
server is back, every document must be in the index with its latest content.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from broker.adapters.outbox import Outbox, OutboxDrainer
from broker.adapters.search.document import locus_document


@pytest.mark.integration
def test_elasticsearch_restart_loses_nothing(elasticsearch_up, tmp_path, locus_factory):
    from broker.adapters.search.elasticsearch import ElasticsearchIndex
    from broker.ops import services

    index = ElasticsearchIndex(index_name=f"outage-{uuid.uuid4().hex[:10]}", request_timeout=5)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    drainer = OutboxDrainer(outbox, index, batch_size=200, min_backoff_s=0.5, max_backoff_s=5).start()
    loci = [locus_factory(30.0 + 0.001 * i, 5.0, n=2, seed=i) for i in range(1200)]
    stop_producing = threading.Event()

    def produce() -> None:
        for i in range(0, len(loci), 20):
            outbox.put([locus_document(x) for x in loci[i : i + 20]])
            time.sleep(0.05)
        stop_producing.set()

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        time.sleep(1.0)
        services.down(["elasticsearch"])
        time.sleep(2.0)
        assert drainer.errors > 0 or outbox.pending() > 0  # the outage was felt
        services.up(["elasticsearch"])
        producer.join(timeout=120)
        assert stop_producing.is_set()
        # the last locus changes after the outage: the index must hold the newer version
        loci[-1].tag("late_update")
        outbox.put([locus_document(loci[-1])])
        assert drainer.flush(timeout=300), f"outbox still holds {outbox.pending()} ({drainer.last_error})"
        index.refresh()
        assert index.count() == len(loci)
        assert outbox.rejected() == {}
        for x in (loci[0], loci[600], loci[-2]):
            assert index.get(x.locus_id)["ztf_object_id"] == x.internal_properties["ztf_object_id"]
        assert index.get(loci[-1].locus_id)["tags"] == ["late_update"]
    finally:
        drainer.stop()
        services.up(["elasticsearch"])
        index.drop()
        index.close()
        outbox.close()
