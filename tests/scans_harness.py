"""One reconstruction scan through the REST API with two real worker processes, one SIGKILLed mid-scan.

Shared by the embedded test (SQLite store and queue: ``tests/web/test_scans_web.py``) and the
production one (Kafka + Cassandra: ``tests/integration/test_scans_kafka.py``): the same requests,
the same kill, the same checks of the result with skyreader.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: where the test's track points (mid-declination: no pole, no RA wrap) and its angular error.
TRUE_RA, TRUE_DEC, SIGMA = 123.4, -31.7, 1.0


def scan_env(tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of the scan server and workers (and of the in-test app's configuration)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_HOME=str(tmp / "home"), ALBIREO_STORE__PATH=str(tmp / "store.sqlite"),
               ALBIREO_SEARCH__PATH=str(tmp / "index.sqlite"), ALBIREO_CATALOGS__ENABLED="false",
               ALBIREO_USERS__DB=str(tmp / "users.sqlite"), ALBIREO_USERS__STREAM_ACCESS="none",
               ALBIREO_USERS__CONSUMER_BOOTSTRAP="kafka.example.org:9094",
               ALBIREO_SCANS__QUEUE_PATH=str(tmp / "queue.sqlite"), ALBIREO_SCANS__LEASE_S="4",
               ALBIREO_SCANS__RESEND_AFTER_S="120", PYTHONUNBUFFERED="1")
    env.update(settings)
    return env


def app_and_key(env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    from broker.assemble import open_users
    from broker.config import load_config
    from web import create_app

    cfg = load_config(env=env)
    key = open_users(cfg).add("astro", "user").api_key
    return create_app(cfg), {"Authorization": f"Bearer {key}"}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "broker.cli", *args], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - closed with the process


def run_scan_killing_a_worker(tmp: Path, env: dict[str, str], work_ms: float = 2.0, timeout_s: float = 400.0,
                              before_post: Any = None) -> dict[str, Any]:
    """POST a scan, run a server and two workers, SIGKILL one mid-scan; return what the checks need.

    ``before_post`` (e.g. waiting for both workers to join the Kafka group) runs once all three started.
    """
    app, auth = app_and_key(env)
    client = app.test_client()
    procs = {"server": _start(["scan-server"], env, tmp / "server.log")}
    procs["w0"] = _start(["scan-worker", "--idle-timeout", "300"], env, tmp / "w0.log")
    procs["w1"] = _start(["scan-worker", "--idle-timeout", "300"], env, tmp / "w1.log")
    killed_at = None
    try:
        if before_post is not None:
            before_post()
        r = client.post("/api/scans", headers=auth, json={
            "event": {"ra": TRUE_RA, "dec": TRUE_DEC, "time": "2026-12-02T10:00:00Z", "run_id": 137840,
                      "event_id": 57034692},
            "reconstruction": "track_gaussian", "params": {"sigma_deg": SIGMA, "work_ms": work_ms}})
        assert r.status_code == 201, r.get_json()
        sid = r.get_json()["data"]["scan_id"]
        deadline = time.monotonic() + timeout_s
        man: dict[str, Any] = {}
        while time.monotonic() < deadline:
            man = client.get(f"/api/scans/{sid}/manifest").get_json()["data"]
            workers = man.get("workers") or {}
            if killed_at is None and len(workers) == 2 and man["pixels_done"] >= 200:
                # both workers are contributing and the first step is under way: kill one of them
                procs["w1"].send_signal(signal.SIGKILL)
                procs["w1"].wait(30)
                killed_at = dict(man)
            if man["status"] in ("done", "failed", "aborted"):
                break
            time.sleep(0.3)
        status = client.get(f"/api/scans/{sid}/status").get_json()["data"]
        result = client.get(f"/api/scans/{sid}/result").get_json()
        store = app.extensions["albireo"].store
        pixels = store.scan_pixels(sid)
        record = store.scan(sid)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    logs = {name: (tmp / f"{name}.log").read_text()[-3000:] for name in procs}
    import socket

    names = {k: f"{socket.gethostname()}-{procs[k].pid}" for k in ("w0", "w1")}
    return {"scan_id": sid, "manifest": man, "workers": names, "killed_at": killed_at, "status": status, "result": result,
            "pixels": pixels, "record": record, "logs": logs, "client": client}


def check_scan(out: dict[str, Any]) -> None:
    """The acceptance checks of issue 14, on what :func:`run_scan_killing_a_worker` returned."""
    import healpy
    from skyreader import SkyScanResult

    from broker.multimessenger.scans.reconstructions import analytic_area
    from broker.multimessenger.scans.result import contours

    assert out["killed_at"] is not None, f"no worker was killed mid-scan: {out['manifest']} {out['logs']}"
    assert out["status"]["status"] == "done", (out["status"], out["logs"])
    man = out["manifest"]
    # the kill happened before the end, and the survivor finished the scan alone
    assert out["killed_at"]["pixels_done"] < man["pixels_done"]
    assert len(out["killed_at"]["workers"]) == 2
    survivor = out["workers"]["w0"]
    assert man["workers"][survivor] > out["killed_at"]["workers"][survivor]
    assert sum(man["workers"].values()) == man["pixels_done"]
    # every step has each of its pixels exactly once in the store
    for step in man["steps"]:
        got = out["pixels"][step["nside"]]
        assert len(got) == step["expected"] == step["done"] == len(np.unique(got[:, 0]))
    assert [s["nside"] for s in man["steps"]] == [8, 64, 512]
    # skyreader reads the result unmodified
    assert out["result"]["is_final"] is True
    res = SkyScanResult.deserialize(out["result"]["skyscan_result"])
    assert res.nsides == [8, 64, 512]
    assert res.has_minimal_metadata() and res.get_event_metadata().run_id == 137840
    # the best pixel is the true direction's pixel at the finest nside, or one of its neighbours
    best = res.best_fit
    nside = best.dtype.metadata["nside"]
    assert nside == 512
    true_pix = healpy.ang2pix(nside, np.radians(90 - TRUE_DEC), np.radians(TRUE_RA))
    assert int(best["index"]) in {int(true_pix), *healpy.get_all_neighbours(nside, true_pix).tolist()}
    # the 90 % area (skyreader's contour functions) within 5 % of the analytic cap
    area90 = contours(res)["levels"]["90"]["area_deg2"]
    analytic = analytic_area(SIGMA)
    assert abs(area90 - analytic) / analytic < 0.05, (area90, analytic)
    assert abs(out["record"]["summary"]["levels"]["90"]["area_deg2"] - area90) < 1e-9
