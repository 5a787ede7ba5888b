"""Store and index throughput from one worker, and cone-search latency.

Prints alert rows/s written to the store, locus documents/s written to the index, and the p50/p95
latency of 1' cone searches over the indexed loci, for the embedded backends (the baseline,
measured in the same run) and, when reachable, Cassandra and Elasticsearch — with the ratio to
the baseline. ``--quick`` uses 10^4 loci; the default is 10^6 (Elasticsearch bulk-loads them).

    python -m bench.bench_storage --quick [--no-servers]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from broker.alert import SURVEY_ZTF_DETECTION, Alert
from broker.association import association_order
from broker.locus import Locus
from broker.ports import LocusQuery

ORDER = association_order(1.0)


def make_batch(start: int, n_loci: int, alerts_per_locus: int, rng: np.random.Generator) -> tuple[list, list]:
    loci, alerts = [], []
    ra = rng.uniform(0, 360, n_loci)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_loci)))
    for i in range(n_loci):
        lid = f"ALB2024{start + i:010d}"
        loc = Locus(lid, float(ra[i]), float(dec[i]))
        al = [Alert(f"{lid}_{k}", SURVEY_ZTF_DETECTION, 60000.0 + k, float(ra[i]), float(dec[i]), "g",
                    18.0 + 0.1 * k, 0.05, 20.5, {"ztf_fid": 1, "ztf_magpsf": 18.0 + 0.1 * k}, f"ZTF{i}")
              for k in range(alerts_per_locus)]
        loc.add_alerts(al)
        loci.append(loc)
        alerts += al
    return loci, alerts


def docs_for(start: int, n: int, rng: np.random.Generator) -> list[dict]:
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    mjd = rng.uniform(59000, 60500, n)
    snr = rng.uniform(0, 100, n)
    return [{"locus_id": f"ALB2024{start + i:010d}", "ra": float(ra[i]), "dec": float(dec[i]),
             "tags": ["high_snr"] if snr[i] > 80 else [], "catalogs": [],
             "properties": {"newest_alert_observation_time": float(mjd[i]), "num_alerts": 3, "snr_max": float(snr[i]),
                            "ztf_object_id": f"ZTF{start + i}"},
             "num_alerts": 3, "first_alert_mjd": float(mjd[i]) - 3, "last_alert_mjd": float(mjd[i]),
             "ztf_object_id": f"ZTF{start + i}", "lsst_dia_object_id": None, "grav_wave_events": []}
            for i in range(n)]


def bench_store(store, n_loci: int, per_locus: int = 5, batch: int = 500) -> float:
    rng = np.random.default_rng(1)
    batches = [make_batch(i * batch, batch, per_locus, rng) for i in range(max(1, n_loci // batch))]
    rows = sum(len(a) for _, a in batches)
    t = time.perf_counter()
    for loci, alerts in batches:
        store.save_batch(loci, alerts)
    return rows / (time.perf_counter() - t)


def bench_index(index, n: int, batch: int = 2000) -> tuple[float, float, float]:
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    written = 0
    for start in range(0, n, batch):
        docs = docs_for(start, min(batch, n - start), rng)
        index.upsert(docs)
        written += len(docs)
    rate = written / (time.perf_counter() - t)
    index.refresh()
    lat = []
    qrng = np.random.default_rng(3)
    for _ in range(200):
        ra, dec = float(qrng.uniform(0, 360)), float(np.degrees(np.arcsin(qrng.uniform(-0.9, 0.9))))
        t = time.perf_counter()
        index.search(LocusQuery(cone=(ra, dec, 1 / 60), limit=100))
        lat.append(time.perf_counter() - t)
    return rate, float(np.percentile(lat, 50) * 1e3), float(np.percentile(lat, 95) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^4 loci instead of 10^6")
    ap.add_argument("--loci", type=int, default=None, help="loci to index (overrides --quick)")
    ap.add_argument("--store-loci", type=int, default=10_000, help="loci written to each store (5 alerts each)")
    ap.add_argument("--no-servers", action="store_true", help="embedded backends only")
    args = ap.parse_args()
    n = args.loci or (10_000 if args.quick else 1_000_000)
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        base_store = bench_store(SQLiteStore(Path(tmp) / "s.sqlite", ORDER), args.store_loci)
        print(f"store  sqlite      {base_store:10.0f} alert rows/s   (baseline)")
        base = bench_index(SQLiteIndex(Path(tmp) / "i.sqlite"), n)
        print(f"index  sqlite      {base[0]:10.0f} locus docs/s   cone p50 {base[1]:6.2f} ms  p95 {base[2]:6.2f} ms"
              f"  on {n} loci (baseline)")
    if args.no_servers:
        return
    from broker.adapters.search.elasticsearch import ElasticsearchIndex
    from broker.adapters.storage.cassandra import CassandraStore
    from broker.ops import services

    services.up(["cassandra", "elasticsearch"])
    cs = CassandraStore(keyspace=f"bench_{uuid.uuid4().hex[:8]}", association_order=ORDER)
    try:
        r = bench_store(cs, args.store_loci)
        print(f"store  cassandra   {r:10.0f} alert rows/s   ({r / base_store:.2f}x sqlite; target ≥ 5000)")
    finally:
        cs.drop_keyspace()
        cs.close()
    es = ElasticsearchIndex(index_name=f"bench-{uuid.uuid4().hex[:8]}", request_timeout=120)
    try:
        r, p50, p95 = bench_index(es, n)
        print(f"index  elastic     {r:10.0f} locus docs/s   ({r / base[0]:.2f}x sqlite; target ≥ 2000)   "
              f"cone p50 {p50:6.2f} ms ({p50 / base[1]:.2f}x; target < 20)  p95 {p95:6.2f} ms  on {n} loci")
    finally:
        es.drop()
        es.close()


if __name__ == "__main__":
    main()
