"""The reconstruction-scan part of the Store contract, on SQLite and Cassandra alike."""

from __future__ import annotations

import numpy as np


def test_scan_records_round_trip_newest_first_and_by_status(store):
    for i, status in enumerate(["queued", "running", "done"]):
        store.put_scan({"scan_id": f"s{i}", "status": status, "created": 100.0 + i, "steps": [{"nside": 8}]})
    assert [r["scan_id"] for r in store.scans()] == ["s2", "s1", "s0"]
    assert [r["scan_id"] for r in store.scans(status="running")] == ["s1"]
    assert store.scans(limit=1)[0]["scan_id"] == "s2"
    store.put_scan({"scan_id": "s1", "status": "aborted", "created": 101.0, "steps": []})  # replace
    assert store.scan("s1")["status"] == "aborted" and store.scans(status="running") == []
    assert store.scan("nope") is None


def test_scan_pixels_are_keyed_by_scan_nside_and_pixel(store):
    rows = np.array([[3, 1.5, 0.0, 0.0], [1, np.nan, 2.0, 3.0]])
    store.put_scan_pixels("s9", 8, rows)
    store.put_scan_pixels("s9", 8, rows)  # a redelivered result: the same rows, once
    store.put_scan_pixels("s9", 64, np.array([[100, 0.25, 0.0, 0.0]]))
    got = store.scan_pixels("s9")
    assert sorted(got) == [8, 64]
    assert got[8][:, 0].tolist() == [1.0, 3.0] and np.isnan(got[8][0, 1]) and got[8][1, 1] == 1.5
    assert got[64].tolist() == [[100.0, 0.25, 0.0, 0.0]]
    assert store.scan_pixels("other") == {}
