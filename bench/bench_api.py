"""p50 latency of ``/v2/loci/<id>`` and of a cone search on the embedded store, against a baseline.

Runs over the pipeline's sample store (``albireo demo`` → ``albireo-demo/``; pass ``--workdir``).
Baseline, measured in the same run: the bare store/index calls the routes make (``load_loci`` +
``Index.search``), so the ratio is what the HTTP layer and the ANTARES serialisation cost.
Each locus is requested once cold (light-curve cache empty) then ``--repeat`` times warm.

    python bench/bench_api.py [--workdir albireo-demo] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="albireo-demo")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    from broker.config import load_config
    from broker.ports import LocusQuery
    from web import create_app

    cfg = load_config(env={})
    cfg.store.path = str(Path(a.workdir) / "albireo.sqlite")
    cfg.search.path = str(Path(a.workdir) / "index.sqlite")
    if not Path(cfg.store.path).exists():
        sys.exit(f"no store at {cfg.store.path}: run `albireo demo` first")
    app = create_app(cfg, catalogs=None)
    b = app.extensions["albireo"]
    client = app.test_client()
    docs = b.index.search(LocusQuery(limit=1000)).hits
    ids = [d["locus_id"] for d in docs]
    print(f"{len(ids)} loci, {b.store.counts()['alerts']} alerts in {cfg.store.path}")

    cold, warm, base_get = [], [], []
    for lid in ids:
        t = time.perf_counter()
        assert client.get(f"/v2/loci/{lid}").status_code == 200
        cold.append(time.perf_counter() - t)
        for _ in range(a.repeat):
            t = time.perf_counter()
            b.store.load_loci([lid])
            base_get.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.get(f"/v2/loci/{lid}")
            warm.append(time.perf_counter() - t)

    cone_api, cone_base = [], []
    for d in docs:
        body = {"query": {"bool": {"filter": {"sky_distance": {"radius": "0.01 degree",
                                                               "location": f"{d['ra']} {d['dec']}"}}}}}
        for _ in range(a.repeat):
            t = time.perf_counter()
            b.index.search(LocusQuery(cone=(d["ra"], d["dec"], 0.01), limit=10))
            cone_base.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = client.get("/v2/loci", query_string={"elasticsearch_query": json.dumps(body), "limit": 10})
            cone_api.append(time.perf_counter() - t)
            assert r.status_code == 200 and r.get_json()["data"]

    rows = [("GET /v2/loci/<id> (cold, first request)", cold, base_get),
            ("GET /v2/loci/<id> (warm)", warm, base_get),
            ("cone search /v2/loci?sky_distance 0.01°", cone_api, cone_base)]
    print(f"{'route':44s} {'p50 ms':>8s} {'baseline p50 ms':>16s} {'ratio':>7s}  target")
    for name, xs, base in rows:
        p, q = _p50(xs), _p50(base)
        print(f"{name:44s} {p:8.2f} {q:16.2f} {p / q:7.1f}x  {'OK' if p < 50 else 'over'} (< 50 ms)")


if __name__ == "__main__":
    main()
