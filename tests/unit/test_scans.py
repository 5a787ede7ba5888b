"""Reconstruction scans without servers: result format, refinement, dedup, abort, priority, hostile messages.

Real parts throughout: skyreader's own SkyScanResult, the SQLite store and the SQLite work queue,
the scan server and worker classes the commands run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from broker.config import load_config
from broker.multimessenger.scans.model import ScanEvent, parse_request
from broker.multimessenger.scans.reconstructions import (
    REGISTRY,
    analytic_area,
    angular_distance,
    pixel_directions,
)
from broker.multimessenger.scans.refine import full_sky, refine
from broker.multimessenger.scans.result import contours, serialize, skyscan_result
from broker.multimessenger.scans.tasks import (
    MessageError,
    decode_result,
    decode_task,
    encode_result,
    encode_task,
)

EVENT = ScanEvent(ra=200.0, dec=20.0, mjd=60000.5, run_id=137840, event_id=57034692)


def _scan_pixels(nsides=(8, 64, 512), sigma=1.0):
    reco = REGISTRY["track_gaussian"]
    pix, out = full_sky(nsides[0]), {}
    for i, n in enumerate(nsides):
        vals = reco.evaluate(EVENT, n, pix, {"sigma_deg": sigma, "work_ms": 0.0})
        out[n] = np.column_stack([pix, vals])
        if i + 1 < len(nsides):
            pix = refine(n, pix, vals[:, 0], nsides[i + 1])
    return out


def test_our_serialisation_is_skyreaders_and_reads_back(monkeypatch):
    import pandas as pd
    from skyreader import SkyScanResult

    pixels = _scan_pixels((8, 64))
    pixels[64][3, 1] = np.nan  # NaN travels as skyreader's sentinel
    res = skyscan_result(EVENT, pixels)
    ours = serialize(res)
    # skyreader's own serialize needs DataFrame.applymap (pandas < 3): restore it to compare
    if not hasattr(pd.DataFrame, "applymap"):
        monkeypatch.setattr(pd.DataFrame, "applymap", pd.DataFrame.map, raising=False)
    assert json.dumps(ours) == json.dumps(res.serialize())
    back = SkyScanResult.deserialize(json.loads(json.dumps(ours)))
    assert back.nsides == [8, 64]
    assert np.array_equal(back.result["nside-8"], res.result["nside-8"])
    assert np.isnan(back.result["nside-64"]["llh"]).sum() == 1
    assert back.get_event_metadata().event_id == 57034692


def test_refinement_covers_the_90_region_and_contours_match_the_cap():
    pixels = _scan_pixels()
    # every nside-512 pixel within the 90 % radius (σ·√4.61) was scanned
    r90 = np.degrees(np.radians(1.0) * np.sqrt(4.61))
    ra, dec = pixel_directions(512, np.arange(12 * 512 ** 2))
    inside = np.flatnonzero(np.degrees(angular_distance(ra, dec, EVENT.ra, EVENT.dec)) < r90)
    assert set(inside.tolist()) <= set(pixels[512][:, 0].astype(int).tolist())
    c = contours(skyscan_result(EVENT, pixels))
    for level in ("50", "90"):
        want = analytic_area(1.0, {"50": 1.39, "90": 4.61}[level])
        assert abs(c["levels"][level]["area_deg2"] - want) / want < 0.02
    assert np.degrees(angular_distance(c["best"]["ra"], c["best"]["dec"], EVENT.ra, EVENT.dec)) < 0.12


def test_a_step_never_exceeds_its_pixel_budget():
    pix = full_sky(8)
    llh = REGISTRY["track_gaussian"].evaluate(EVENT, 8, pix, {"sigma_deg": 30.0})[:, 0]
    assert len(refine(8, pix, llh, 512, max_pixels=1000)) == 1000


def test_per_pixel_reconstructions_plug_in_by_name():
    from broker.multimessenger.scans.reconstructions import register_per_pixel

    @register_per_pixel("test_flat_dec")
    def flat(event, ra, dec, params):
        return abs(dec - event.dec)

    try:
        out = REGISTRY["test_flat_dec"].evaluate(EVENT, 8, np.array([0, 300]), {})
        _, dec = pixel_directions(8, np.array([0, 300]))
        assert np.allclose(out[:, 0], np.abs(dec - EVENT.dec)) and not REGISTRY["test_flat_dec"].vectorised
    finally:
        REGISTRY.pop("test_flat_dec")


@pytest.mark.parametrize("raw", [
    b"", b"\xff\xfe", b"[]", b'{"v": 2}', b'{"v":1,"scan":"a b","nside":8}', b'{"v":1,"scan":"ab","nside":6}',
    b'{"v":1,"scan":"ab","nside":8,"pixels":[768],"reconstruction":"x","params":{},"event":{}}',
    b'{"v":1,"scan":"ab","nside":8,"pixels":[true],"reconstruction":"x","params":{},"event":{}}',
    b'{"v":1,"scan":"ab","nside":8,"pixels":[1],"reconstruction":"x","params":{"a":"1"},"event":{}}',
    b'{"v":1,"scan":"ab","nside":8,"pixels":[1],"reconstruction":"x","params":{},"event":{"ra":"x"}}',
    b'{"v":1,"scan":"ab","nside":8,"pixels":[1],"reconstruction":"x","params":{},"event":{"ra":NaN}}',
    b"{" * 100_000, b" " * (2 * 1024 * 1024),
])
def test_hostile_task_messages_are_refused_with_a_reason(raw):
    with pytest.raises(MessageError):
        decode_task(raw)


def test_messages_round_trip_and_bad_results_are_refused():
    t = decode_task(encode_task("ab12", 8, np.array([1, 2]), "track_gaussian", {"sigma_deg": 1.0}, EVENT))
    assert t.event == EVENT and t.pixels.tolist() == [1, 2]
    r = decode_result(encode_result("ab12", 8, np.array([5]), np.array([[np.inf, 1.0, 2.0]]), "w", 0.1))
    assert np.isnan(r.rows[0, 1]) and r.rows[0, 2] == 1.0
    for bad in (b'{"v":1,"scan":"ab","nside":8,"rows":[[1,2,3]]}', b'{"v":1,"scan":"ab","nside":8,"rows":[[999,1,1,1]]}',
                b'{"v":1,"scan":"ab","nside":8,"rows":[[1,"a",1,1]]}'):
        with pytest.raises(MessageError):
            decode_result(bad)


# ---- the server and worker over the SQLite store and queue ---------------------------------------
@pytest.fixture
def stack(tmp_path):
    from broker.assemble import open_store, scan_server, scan_worker

    cfg = load_config(env={"ALBIREO_STORE__PATH": str(tmp_path / "s.sqlite"),
                           "ALBIREO_SCANS__QUEUE_PATH": str(tmp_path / "q.sqlite"), "ALBIREO_HOME": str(tmp_path)})
    store = open_store(cfg)
    return cfg, store, scan_server(cfg, store), scan_worker(cfg, store)


def _new_scan(store, priority="realtime", nsides=(8, 64)):
    spec = parse_request({"event": {"ra": EVENT.ra, "dec": EVENT.dec, "mjd": EVENT.mjd, "run_id": 1, "event_id": 2},
                          "priority": priority, "nside_progression": list(nsides)}, REGISTRY)
    store.put_scan(spec.record())
    return spec.scan_id


def _until_quiet(server, worker, rounds=400):
    for _ in range(rounds):
        busy = worker.step()
        if not server.step(0.01) and not busy:
            return


def test_duplicate_stale_and_foreign_results_are_ignored_and_counted(stack):
    cfg, store, server, worker = stack
    sid = _new_scan(store)
    server.start_queued()
    _until_quiet(server, worker)
    rec = store.scan(sid)
    assert rec["status"] == "done"
    # the same results again (a redelivered task), a pixel outside the step, and an older nside
    step64 = rec["steps"][1]
    done_pixels = np.array(step64["pixels"][:20])
    vals = REGISTRY["track_gaussian"].evaluate(EVENT, 64, done_pixels, {"sigma_deg": 1.0})
    store.put_scan({**rec, "status": "running", "step": 1})  # as if the scan were still collecting
    sink = server.sink
    outside = np.setdiff1d(np.arange(12 * 64 ** 2), step64["pixels"])[:3]
    for msg in (encode_result(sid, 64, done_pixels, vals, "dup"),
                encode_result(sid, 64, outside, np.zeros((3, 3)), "foreign"),
                encode_result(sid, 8, np.array([1, 2]), np.zeros((2, 3)), "stale")):
        sink.publish(server.settings.result_topic, sid.encode(), msg)
    sink.flush()
    server.step(0.5)
    after = store.scan(sid)
    assert after["duplicates_ignored"] == rec.get("duplicates_ignored", 0) + 20 + 3 + 2
    assert "dup" not in after.get("workers", {}) and "foreign" not in after.get("workers", {})
    got = store.scan_pixels(sid)[64]
    assert len(got) == step64["expected"] == len(np.unique(got[:, 0]))
    assert not np.isin(outside, got[:, 0]).any()


def test_an_aborted_scan_stops_workers_skip_its_tasks_and_the_server_leaves_it_aborted(stack):
    cfg, store, server, worker = stack
    sid = _new_scan(store)
    server.start_queued()
    worker.step()  # some of the first step
    server.step(0.5)
    before = sum(len(v) for v in store.scan_pixels(sid).values())
    assert 0 < before < 768
    rec = store.scan(sid)
    store.put_scan({**rec, "status": "aborted"})
    worker._status.clear()  # the worker re-reads the status (it caches it for status_ttl_s)
    _until_quiet(server, worker)
    assert store.scan(sid)["status"] == "aborted"
    assert worker.stats.skipped > 0
    assert sum(len(v) for v in store.scan_pixels(sid).values()) <= before + cfg.scans.pixels_per_task * 8


def test_realtime_tasks_overtake_a_backfill_already_queued(stack):
    cfg, store, server, worker = stack
    back = _new_scan(store, "backfill", (8,))
    server.start_queued()
    worker.step()  # the backfill scan is running
    real = _new_scan(store, "realtime", (8,))
    server.start_queued()
    lanes_before = len(worker.stats.lanes)
    _until_quiet(server, worker)
    lanes = worker.stats.lanes[lanes_before:]
    # every realtime task came before every remaining backfill task
    assert "realtime" in lanes and "backfill" in lanes
    assert max(i for i, lane in enumerate(lanes) if lane == "realtime") < \
        min(i for i, lane in enumerate(lanes) if lane == "backfill")
    assert store.scan(real)["status"] == "done" and store.scan(back)["status"] == "done"
    assert store.scan(real)["finished"] < store.scan(back)["finished"]


def test_the_sqlite_queue_redelivers_what_a_dead_consumer_held(tmp_path):
    import time

    from broker.adapters.streams.sqlite_queue import QueueSink, QueueSource

    sink = QueueSink(tmp_path / "q.sqlite")
    for i in range(5):
        sink.publish("t", None, f"m{i}".encode())
    sink.flush()
    a = QueueSource(tmp_path / "q.sqlite", "g", ["t"], lease_s=0.3)
    b = QueueSource(tmp_path / "q.sqlite", "g", ["t"], lease_s=0.3)
    got_a = a.poll_batch(3, 0.1)  # a "dies" holding 3
    got_b = b.poll_batch(10, 0.1)
    assert [m.value for m in got_a] == [b"m0", b"m1", b"m2"] and [m.value for m in got_b] == [b"m3", b"m4"]
    b.commit(got_b)
    assert b.poll_batch(10, 0.05) == []
    time.sleep(0.4)
    again = b.poll_batch(10, 0.1)
    assert [m.value for m in again] == [b"m0", b"m1", b"m2"]
    b.commit(again)
    other = QueueSource(tmp_path / "q.sqlite", "other-group", ["t"])
    assert len(other.poll_batch(10, 0.1)) == 5  # another group sees every message


def test_a_forged_task_with_parameters_out_of_bounds_is_not_evaluated(stack):
    cfg, store, server, worker = stack
    sid = _new_scan(store)
    server.start_queued()
    forged = encode_task(sid, 8, np.array([1, 2]), "track_gaussian", {"sigma_deg": 1.0, "work_ms": 1e9}, EVENT)
    realtime_topic = server.settings.task_topics["realtime"]
    worker.sink.publish(realtime_topic, None, forged)
    worker.sink.flush()
    _until_quiet(server, worker)
    assert worker.stats.rejected == 1 and store.scan(sid)["status"] == "done"


def test_a_plugin_named_in_the_configuration_runs_a_scan(tmp_path):
    from broker.assemble import open_store, scan_registry, scan_server, scan_worker

    cfg = load_config(env={"ALBIREO_STORE__PATH": str(tmp_path / "s.sqlite"), "ALBIREO_HOME": str(tmp_path),
                           "ALBIREO_SCANS__QUEUE_PATH": str(tmp_path / "q.sqlite"),
                           "ALBIREO_SCANS__PLUGINS": "tests.scans_plugin_example"})
    try:
        registry = scan_registry(cfg)
        assert "example_ring" in registry and not registry["example_ring"].vectorised
        store = open_store(cfg)
        spec = parse_request({"event": {"ra": 10.0, "dec": 0.0, "mjd": 60000.0, "run_id": 1, "event_id": 1},
                              "reconstruction": "example_ring", "params": {"radius_deg": 20.0},
                              "nside_progression": [4, 16]}, registry)
        store.put_scan(spec.record())
        server, worker = scan_server(cfg, store), scan_worker(cfg, store)
        server.start_queued()
        _until_quiet(server, worker)
        assert store.scan(spec.scan_id)["status"] == "done"
        rows = store.scan_pixels(spec.scan_id)[16]
        best_d = rows[np.argmin(rows[:, 1]), 3]  # E_tot carries the distance in this example
        assert abs(best_d - 20.0) < 2.0
    finally:
        REGISTRY.pop("example_ring", None)
