"""The Cassandra store's byte-bounded in-flight window: waves keep order and respect the byte bound.

Cassandra answers more than 25 MiB in flight per client with backpressure (then the driver's
``ConnectionBusy``); the store therefore sends its requests in consecutive waves of at most
``MAX_BYTES_IN_FLIGHT`` bytes. No server is needed to check how the work is cut.
"""

from __future__ import annotations

from broker.adapters.storage.cassandra import _request_bytes, _waves


def test_waves_keep_order_and_stay_under_the_byte_bound():
    work = [(None, (f"id{i}", b"x" * (1000 * (i % 7)))) for i in range(200)]
    waves = list(_waves(work, max_bytes=20_000))
    assert [item for w in waves for item in w] == work  # nothing lost, nothing reordered
    assert len(waves) > 1
    for w in waves:
        assert sum(_request_bytes(*item) for item in w) <= 20_000 or len(w) == 1


def test_a_request_larger_than_the_bound_goes_alone():
    big = (None, ("k", b"y" * 50_000))
    small = (None, ("k", b"z" * 10))
    waves = list(_waves([small, big, small], max_bytes=1_000))
    assert waves == [[small], [big], [small]]
    assert _request_bytes(*big) > 50_000
