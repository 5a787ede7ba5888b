"""Reconstruction scans on the embedded stack (SQLite store and SQLite work queue), through the REST API.

The acceptance test of issue 14 with real processes: ``albireo scan-server`` and two
``albireo scan-worker``; one worker is SIGKILLed mid-scan; the scan finishes, skyreader reads the
result, the best pixel is the true direction's (or a neighbour), the 90 % area is within 5 % of the
analytic cap. Then the pages: the list, the scan page with its map, the event page's link.
"""

from __future__ import annotations

import pytest

from tests.scans_harness import check_scan, run_scan_killing_a_worker, scan_env


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scans-embedded")
    out = run_scan_killing_a_worker(tmp, scan_env(tmp))
    return out


def test_a_scan_with_a_killed_worker_finishes_and_skyreader_reads_it(finished):
    check_scan(finished)


def test_the_scan_pages_show_progress_map_and_contours(finished):
    client, sid = finished["client"], finished["scan_id"]
    page = client.get("/scans")
    assert page.status_code == 200 and sid[:12] in page.get_data(as_text=True)
    one = client.get(f"/scans/{sid}")
    text = one.get_data(as_text=True)
    assert one.status_code == 200 and "scan-map" in text and 'id="scan-status">done<' in text
    png = client.get(f"/scans/{sid}/map.png")
    assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n" and len(png.data) > 10_000
    # the API's other views of the same scan
    assert client.get(f"/api/scans/{sid}").get_json()["data"]["status"] == "done"
    found = client.post("/api/scans/find", json={"filter": {"run_id": 137840, "status": "done"}}).get_json()
    assert [s["scan_id"] for s in found["data"]] == [sid]
    assert client.post("/api/scans/find", json={"filter": {"run_id": 1}}).get_json()["data"] == []
    assert client.get("/api/scans/backlog").get_json()["data"] == []
