"""Reconstruction scans: pixels/s per worker with 1 and 2 workers, and time to the final result vs a plain loop.

The same scan each time (``track_gaussian``, σ = 1°, nsides 8 → 64 → 512: 5,952 pixels with the
default refinement), run three ways in one process tree:

* **baseline** — one process evaluating the reconstruction over the same pixels, step after step,
  with the same refinement between steps, no queue and no store (measured in this run);
* **1 worker / 2 workers** — the real thing: ``albireo scan-worker`` processes, the scan server
  (in a thread of this process) and the store, from the moment the scan is stored until it is
  ``done`` (the workers have already joined: start-up is not counted).

Each at two costs per pixel: ``work_ms = 0`` (the vectorised built-in as is: the scan measures the
machinery — messages, store writes, refinement, contours) and ``work_ms = 2`` (2 ms of CPU per
pixel, what a costly reconstruction spends: the scan measures parallel speed-up). Printed: wall
time, pixels/s in all and per worker, and the ratios to the baseline and between 1 and 2 workers.
The queue is Kafka when it answers (``make bench`` starts it), else the embedded SQLite queue.

    python -m bench.bench_scans            # about 1-2 minutes
    python -m bench.bench_scans --queue sqlite --work-ms 0 2 5
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENT = {"ra": 123.4, "dec": -31.7, "mjd": 60000.0, "run_id": 137840, "event_id": 1}


def baseline(work_ms: float, nsides: list[int]) -> tuple[float, int]:
    """The single-process loop: seconds and pixels for the same pixels the scan evaluates."""
    from broker.multimessenger.scans.model import ScanEvent
    from broker.multimessenger.scans.reconstructions import REGISTRY
    from broker.multimessenger.scans.refine import full_sky, refine

    reco, ev = REGISTRY["track_gaussian"], ScanEvent(**EVENT)
    t0 = time.perf_counter()
    pix, total = full_sky(nsides[0]), 0
    for i, n in enumerate(nsides):
        vals = reco.evaluate(ev, n, pix, {"sigma_deg": 1.0, "work_ms": work_ms})
        total += len(pix)
        if i + 1 < len(nsides):
            pix = refine(n, pix, vals[:, 0], nsides[i + 1])
    return time.perf_counter() - t0, total


def _env(tmp: Path, queue: str, tag: str) -> dict[str, str]:
    from broker.ops import services

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_HOME=str(tmp / "home"), ALBIREO_STORE__PATH=str(tmp / f"store-{tag}.sqlite"),
               ALBIREO_SCANS__QUEUE=queue, ALBIREO_SCANS__QUEUE_PATH=str(tmp / f"queue-{tag}.sqlite"),
               ALBIREO_SCANS__TOPIC_PREFIX=f"bench-scans-{tag}.", ALBIREO_SCANS__GROUP_ID=f"bench-w-{tag}",
               ALBIREO_SCANS__SERVER_GROUP_ID=f"bench-s-{tag}", ALBIREO_SCANS__PARTITIONS="4",
               ALBIREO_CATALOGS__ENABLED="false", ALBIREO_SERVICE__LOG_LEVEL="WARNING")
    if queue == "kafka":
        env["ALBIREO_KAFKA__BOOTSTRAP_SERVERS"] = services.endpoints()["kafka"]
    return env


def _wait_members(boot: str, group: str, n: int, timeout_s: float = 120) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": boot})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
            if len([m for m in desc.members if m.assignment.topic_partitions]) == n and \
                    str(desc.state).endswith("STABLE"):
                return
        except Exception:  # noqa: BLE001 - the group does not exist until its first member joins
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{n} workers never joined {group}")


def run_scans(tmp: Path, queue: str, workers: int, costs: list[float], nsides: list[int]) -> dict[float, dict]:
    """Start ``workers`` scan-worker processes, then one scan per cost; wall time to ``done`` for each."""
    from broker.assemble import open_store, scan_server
    from broker.config import load_config
    from broker.multimessenger.scans.model import parse_request
    from broker.multimessenger.scans.reconstructions import REGISTRY
    from broker.multimessenger.scans.server import manifest

    tag = f"{workers}w-{uuid.uuid4().hex[:6]}"
    env = _env(tmp, queue, tag)
    cfg = load_config(env=env)
    store = open_store(cfg)
    server = scan_server(cfg, store)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, kwargs={"stop": stop.is_set, "start_every_s": 0.05}, daemon=True)
    thread.start()
    procs = [subprocess.Popen([sys.executable, "-m", "broker.cli", "scan-worker"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(workers)]
    out: dict = {}
    try:
        if queue == "kafka":
            _wait_members(env["ALBIREO_KAFKA__BOOTSTRAP_SERVERS"], f"{cfg.scans.group_id}.realtime", workers)
            _wait_members(env["ALBIREO_KAFKA__BOOTSTRAP_SERVERS"], f"{cfg.scans.group_id}.backfill", workers)
        for cost in costs:
            spec = parse_request({"event": EVENT, "nside_progression": nsides,
                                  "params": {"sigma_deg": 1.0, "work_ms": cost}}, REGISTRY)
            t0 = time.perf_counter()
            store.put_scan(spec.record())
            while (rec := store.scan(spec.scan_id))["status"] in ("queued", "running"):
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"scan did not finish: {manifest(rec)}")
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            m = manifest(rec)
            assert rec["status"] == "done", m
            out[cost] = {"wall_s": wall, "pixels": m["pixels_done"], "per_worker": m["workers"]}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        lines = []
        for p in procs:
            try:
                lines.append(p.communicate(timeout=30)[0].strip().splitlines()[-1:])
            except subprocess.TimeoutExpired:
                p.kill()
        out["workers"] = [x[0] for x in lines if x]
        stop.set()
        thread.join(30)
        store.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", choices=("auto", "kafka", "sqlite"), default="auto")
    ap.add_argument("--work-ms", type=float, nargs="+", default=[0.0, 2.0], help="CPU ms per pixel")
    ap.add_argument("--nsides", type=int, nargs="+", default=[8, 64, 512])
    args = ap.parse_args(argv)
    queue = args.queue
    if queue == "auto":
        from broker.adapters.streams.kafka import check_reachable
        from broker.ops import services

        try:
            check_reachable(services.endpoints()["kafka"], timeout_s=2)
            queue = "kafka"
        except Exception:  # noqa: BLE001 - no Kafka: the embedded queue
            queue = "sqlite"
    print(f"reconstruction scans: track_gaussian, nsides {args.nsides}, queue {queue}, {os.cpu_count()} CPUs")
    base = {c: baseline(c, args.nsides) for c in args.work_ms}
    with tempfile.TemporaryDirectory() as d:
        runs = {w: run_scans(Path(d), queue, w, args.work_ms, args.nsides) for w in (1, 2)}
    print(f"{'work/pixel':>10} {'run':>18} {'pixels':>7} {'wall s':>8} {'pixels/s':>10} {'per worker':>11} "
          f"{'vs loop':>8}")
    for c in args.work_ms:
        t_loop, n = base[c]
        print(f"{c:>8.1f}ms {'single-process loop':>18} {n:>7} {t_loop:>8.3f} {n / t_loop:>10,.0f} {'':>11} "
              f"{'1.00x':>8}")
        for w in (1, 2):
            r = runs[w][c]
            rate = r["pixels"] / r["wall_s"]
            print(f"{'':>10} {f'scan, {w} worker' + ('s' if w > 1 else ''):>18} {r['pixels']:>7} "
                  f"{r['wall_s']:>8.3f} {rate:>10,.0f} {rate / w:>11,.0f} {t_loop / r['wall_s']:>7.2f}x")
        speedup = runs[1][c]["wall_s"] / runs[2][c]["wall_s"]
        split = sorted(runs[2][c]["per_worker"].values())
        print(f"{'':>10} 2 workers vs 1: {speedup:.2f}x faster to the final result; pixels per worker {split}")
    for w in (1, 2):
        for line in runs[w]["workers"]:
            print(f"  {w}-worker run, one worker's own count over all its scans: {line}")
    print("(vs loop: the loop's time over the scan's; below 1 means the scan took longer than the loop)")


if __name__ == "__main__":
    main()
