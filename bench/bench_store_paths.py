"""The Cassandra store's hot path, old against new, on the same server in the same run.

Writes the same realistic batches — what the pipeline asks of the store per Kafka batch: claim the
new loci, then save the touched loci with their new alerts — through the previous implementation
(:mod:`bench.cassandra_baseline`: multi-partition unlogged batches, an LWT lease acquired and
released per association region) and through the current :class:`CassandraStore` (batches per
partition through a bounded window, one conditional batch per claim region), each into a fresh
keyspace. The machine is shared and noisy, so the stores take turns batch by batch (the order
rotating): load from elsewhere falls on all of them alike, and the ratio within a round is what
counts; ``--rounds`` repeats it. Reports alerts/s over the time spent in the store, claim and
save time per batch, Cassandra's own CPU seconds (its process group's utime + stime from
``/proc``, sampled around each store call) per 1000 alerts, and this process's CPU.

Batches: ``--batch`` alerts, ``--new-fraction`` of them founding loci, the rest joining loci of
earlier batches; positions within ±20° of a few real survey fields (as ``bench_e2e`` jitters its
packets); each new locus arrives with ``--history`` earlier detections, as ZTF packets do.

    python -m bench.bench_store_paths [--batches 20] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import uuid
from typing import Any

import numpy as np

from broker.alert import SURVEY_ZTF_DETECTION, Alert
from broker.association import association_order, neighbour_block, pixels_of
from broker.locus import Locus, make_locus_id

ORDER = association_order(1.0)
RADIUS = 1.0
#: (ra, dec) of the fields the positions are drawn around (ZTF/Rubin-like, both hemispheres).
CENTRES = ((150.0, 2.2), (53.1, -27.8), (270.0, -30.0), (10.7, 41.3))


def make_batches(n_batches: int, batch: int, new_fraction: float, history: int,
                 seed: int = 7) -> list[tuple[list[tuple[str, float, float]], list[tuple[int, Alert, list[Alert]]]]]:
    """Per batch: the founding candidates, and every alert as (index of its locus in the run, alert, history)."""
    rng = np.random.default_rng(seed)
    known: list[tuple[str, float, float]] = []
    out = []
    serial = 0
    for b in range(n_batches):
        n_new = batch if not known else int(round(batch * new_fraction))
        c = np.array(CENTRES)[rng.integers(0, len(CENTRES), n_new)]
        ra = (c[:, 0] + rng.uniform(-20, 20, n_new)) % 360.0
        dec = np.clip(c[:, 1] + rng.uniform(-20, 20, n_new), -89.9, 89.9)
        cands, alerts = [], []
        mjd = 60000.0 + b * 0.01
        for i in range(n_new):
            serial += 1
            aid = f"ztf_candidate_{serial}"
            lid = make_locus_id(aid, mjd)
            cands.append((lid, float(ra[i]), float(dec[i])))
            trig = Alert(aid, SURVEY_ZTF_DETECTION, mjd, float(ra[i]), float(dec[i]), "g", 18.0, 0.05, 20.5,
                         {"ztf_fid": 1, "ztf_magpsf": 18.0, "ztf_field": 600}, f"ZTF{serial}")
            hist = [Alert(f"{aid}_h{k}", SURVEY_ZTF_DETECTION, mjd - 1.0 - k, float(ra[i]), float(dec[i]), "R",
                          18.2, 0.06, 20.4, {"ztf_fid": 2, "ztf_magpsf": 18.2}, f"ZTF{serial}", True)
                    for k in range(history)]
            alerts.append((len(known) + i, trig, hist))
        for _ in range(batch - n_new):
            k = int(rng.integers(0, len(known)))
            serial += 1
            _, r, d = known[k]
            alerts.append((k, Alert(f"ztf_candidate_{serial}", SURVEY_ZTF_DETECTION, mjd, r, d, "g", 18.1, 0.05,
                                    20.5, {"ztf_fid": 1, "ztf_magpsf": 18.1}, f"ZTF{k}"), []))
        known.extend(cands)
        out.append((cands, alerts))
    return out


class _Run:
    """One store's side of an interleaved run: its loci, and the time and CPU charged to it."""

    def __init__(self, kind: str, store: Any) -> None:
        self.kind, self.store = kind, store
        self.loci: dict[int, Locus] = {}
        self.n_ids = 0
        self.claim_s = self.save_s = self.cassandra_cpu_s = self.client_cpu_s = 0.0
        self.alerts = 0

    def step(self, cands: list[tuple[str, float, float]], alerts: list[tuple[int, Alert, list[Alert]]]) -> None:
        """One batch, the way the pipeline asks it of the store.

        "claim" includes association's read of the stored positions around the new loci (the
        pipeline reads them for every alert; only the founders' blocks are read here).
        """
        cpu0, own0 = cassandra_cpu_s(), time.process_time()
        t = time.perf_counter()
        ra, dec = np.array([c[1] for c in cands]), np.array([c[2] for c in cands])
        blocks = neighbour_block(pixels_of(ra, dec, ORDER), ORDER)
        known = self.store.locus_positions(np.unique(blocks[blocks >= 0]).tolist())
        winners = self.store.claim_new_loci(cands, RADIUS, known=known)
        t1 = time.perf_counter()
        for j, (lid, r, d) in enumerate(cands):
            self.loci[self.n_ids + j] = Locus(winners[lid], r, d, stored_position=(r, d))
        self.n_ids += len(cands)
        touched: dict[str, Locus] = {}
        new_alerts: list[Alert] = []
        for k, trig, hist in alerts:
            locus = self.loci[k]
            # copies: the other store gets the same alerts, and add_alerts sets each one's locus_id
            new_alerts += locus.add_alerts([dataclasses.replace(a) for a in (*hist, trig)])
            touched[locus.locus_id] = locus
        t2 = time.perf_counter()
        self.store.save_batch(list(touched.values()), new_alerts)
        t3 = time.perf_counter()
        self.claim_s += t1 - t
        self.save_s += t3 - t2
        self.cassandra_cpu_s += cassandra_cpu_s() - cpu0
        self.client_cpu_s += time.process_time() - own0
        self.alerts += len(alerts)

    def report(self, n_batches: int) -> dict[str, float]:
        busy = self.claim_s + self.save_s
        return {"kind": self.kind, "alerts": self.alerts, "store_s": busy, "alerts_per_s": self.alerts / busy,
                "claim_ms_per_batch": 1e3 * self.claim_s / n_batches, "save_ms_per_batch": 1e3 * self.save_s / n_batches,
                "cassandra_cpu_s": self.cassandra_cpu_s, "cassandra_cpu_s_per_1000": 1000 * self.cassandra_cpu_s / self.alerts,
                "client_cpu_s": self.client_cpu_s}


def cassandra_cpu_s() -> float:
    from bench.bench_e2e import _server_cpu

    return _server_cpu().get("cassandra", float("nan"))


def open_store(kind: str, max_in_flight: int) -> Any:
    from bench.cassandra_baseline import BaselineCassandraStore
    from broker.adapters.storage.cassandra import CassandraStore

    keyspace = f"benchpaths_{uuid.uuid4().hex[:8]}"
    if kind == "old":
        return BaselineCassandraStore(keyspace=keyspace, association_order=ORDER, max_in_flight=128)
    return CassandraStore(keyspace=keyspace, association_order=ORDER, max_in_flight=max_in_flight,
                          batch_by=kind.removeprefix("new-"))


def measure(kinds: list[str], batches: list, max_in_flight: int) -> dict[str, dict[str, float]]:
    """Every batch through every store in turn (the order rotating), so load from elsewhere hits all alike."""
    runs = [_Run(k, open_store(k, max_in_flight)) for k in kinds]
    try:
        for b, (cands, alerts) in enumerate(batches):
            for k in range(len(runs)):
                runs[(b + k) % len(runs)].step(cands, alerts)
    finally:
        for r in runs:
            r.store.drop_keyspace()
            r.store.close()
    return {r.kind: r.report(len(batches)) for r in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20, help="batches per measurement")
    ap.add_argument("--batch", type=int, default=500, help="alerts per batch (kafka.batch_size)")
    ap.add_argument("--new-fraction", type=float, default=0.6, help="share of alerts that found a locus")
    ap.add_argument("--history", type=int, default=10, help="earlier detections arriving with each new locus")
    ap.add_argument("--rounds", type=int, default=3, help="old/new pairs, alternating")
    ap.add_argument("--max-in-flight", type=int, default=64, help="store.cassandra_max_in_flight of the new path")
    ap.add_argument("--batch-by", nargs="+", default=["replica", "partition"], choices=["replica", "partition"],
                    help="store.cassandra_batch_by values of the new path to measure")
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    args = ap.parse_args()
    from broker.ops import services

    services.up(["cassandra"])
    batches = make_batches(args.batches, args.batch, args.new_fraction, args.history)
    rows = []
    print(f"{args.batches} batches x {args.batch} alerts, {args.new_fraction:.0%} new loci with "
          f"{args.history} history alerts each; Cassandra CPU from /proc")
    kinds = ["old", *(f"new-{b}" for b in args.batch_by)]
    for r in range(args.rounds):
        res = measure(kinds, batches, args.max_in_flight)
        for kind in kinds:
            m = res[kind]
            rows.append({"round": r, **m})
            print(f"round {r} {kind:13s}: {m['alerts_per_s']:6.0f} alerts/s  claim {m['claim_ms_per_batch']:6.1f} ms/batch"
                  f"  save {m['save_ms_per_batch']:6.1f} ms/batch  cassandra CPU {m['cassandra_cpu_s']:6.1f} s"
                  f" ({m['cassandra_cpu_s_per_1000']:.2f} s/1000 alerts)  client CPU {m['client_cpu_s']:6.1f} s",
                  flush=True)
        for kind in kinds[1:]:
            new, old = res[kind], res["old"]
            print(f"round {r} ratio {kind}/old: {new['alerts_per_s'] / old['alerts_per_s']:.2f}x alerts/s, "
                  f"Cassandra CPU per alert {new['cassandra_cpu_s_per_1000'] / old['cassandra_cpu_s_per_1000']:.2f}x",
                  flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
