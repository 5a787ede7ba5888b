"""Two real worker processes race to found loci at the same places; exactly one locus per place.

Each process gets the same 60 positions (in a different order, with its own candidate ids) and
claims them in small batches after a shared barrier, the way two consumers of one group would
if the same sky reached both at once. Afterwards every place must hold exactly one locus, and
both processes must have been told the same winner for it.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid

import numpy as np
import pytest

from .conftest import ORDER, RADIUS_ARCSEC

N_PLACES = 60


def _places(layout: str = "random") -> np.ndarray:
    """60 places ≥ 2" apart: scattered in a 3' box, or 10" apart along a claim-region edge (on it, to 0.01")."""
    if layout == "random":
        rng = np.random.default_rng(5)
        return np.column_stack([rng.uniform(120.0, 120.05, N_PLACES), rng.uniform(-10.0, -9.95, N_PLACES)])
    from broker.adapters.storage.cassandra import CLAIM_REGION_DELTA
    from broker.association import pixels_of

    def region(ra: np.ndarray, dec: float) -> np.ndarray:
        return pixels_of(np.asarray(ra, dtype=float), np.full(np.size(ra), dec), ORDER) >> (2 * CLAIM_REGION_DELTA)

    out = []
    for k in range(N_PLACES):
        dec = -10.0 + k * 10 / 3600
        ra = np.arange(120.0, 135.0, 1e-4)
        i = int(np.flatnonzero(np.diff(region(ra, dec)))[0])
        lo, hi = float(ra[i]), float(ra[i + 1])
        while hi - lo > 3e-6:  # bisect to where the claim region changes along this declination
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if region([mid], dec)[0] == region([lo], dec)[0] else (lo, mid)
        out.append(((lo + hi) / 2, dec))
    return np.array(out)


def _open(kind: str, where: str):
    if kind == "sqlite":
        from broker.adapters.storage.sqlite import SQLiteStore

        return SQLiteStore(where, ORDER)
    from broker.adapters.storage.cassandra import CassandraStore

    return CassandraStore(keyspace=where, association_order=ORDER)


def _worker(kind: str, where: str, name: str, barrier, out, layout: str = "random") -> None:
    store = _open(kind, where)
    places = _places(layout)
    order = np.random.default_rng(hash(name) % 2**32).permutation(N_PLACES)
    half = 0.3 / 3600  # each worker's alert lands 0.3" from the place, on its own side
    offset = half if name == "w1" else -half
    # along the edge layout's places the sides are east and west: the two alerts of a place are homed in
    # different claim regions, so only the lease on both keeps them from both founding
    dra, ddec = (offset / np.cos(np.radians(places[:, 1])), 0 * places[:, 1]) if layout == "edge" else \
        (0 * places[:, 1], np.full(N_PLACES, offset))
    barrier.wait()
    answers = {}
    for chunk in np.array_split(order, 12):
        cands = [(f"ALB{name}_{i}", float(places[i, 0] + dra[i]), float(places[i, 1] + ddec[i])) for i in chunk]
        got = store.claim_new_loci(cands, RADIUS_ARCSEC)
        answers.update({int(c[0].split("_")[1]): got[c[0]] for c in cands})
    store.close()
    out.put((name, answers))


def _race(kind: str, where: str, layout: str = "random") -> tuple[dict[int, str], dict[int, str]]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, where, n, barrier, out, layout)) for n in ("w1", "w2")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results["w1"], results["w2"]


def _check(store, a: dict[int, str], b: dict[int, str], layout: str = "random") -> None:
    from broker.association import neighbour_block, pixels_of

    assert a == b, "the two workers were told different winners"
    places = _places(layout)
    assert len(set(a.values())) == N_PLACES
    # the winners are split between the workers (it was a real race), and nothing else was written
    owners = {w.split("_")[0] for w in a.values()}
    pix = neighbour_block(pixels_of(places[:, 0], places[:, 1], ORDER), ORDER)
    stored = store.locus_positions(pix[pix >= 0].tolist())
    assert sorted(stored.locus_ids) == sorted(a.values())
    assert owners <= {"ALBw1", "ALBw2"}


def test_two_processes_sqlite(tmp_path):
    path = str(tmp_path / "race.sqlite")
    _open("sqlite", path).close()
    a, b = _race("sqlite", path)
    store = _open("sqlite", path)
    _check(store, a, b)
    store.close()


@pytest.mark.integration
def test_two_processes_cassandra(cassandra_up):
    keyspace = f"race_{uuid.uuid4().hex[:10]}"
    store = _open("cassandra", keyspace)  # creates the schema before the race
    try:
        a, b = _race("cassandra", keyspace)
        _check(store, a, b)
    finally:
        store.drop_keyspace()
        store.close()


@pytest.mark.integration
def test_two_processes_cassandra_across_claim_regions(cassandra_up):
    """The same race on a claim-region edge: each place's two alerts fall on either side of it, so the
    compare-and-set of one region cannot see the other's claim; the lease on both regions must serialise them."""
    from broker.adapters.storage.cassandra import CLAIM_REGION_DELTA
    from broker.association import neighbour_block, pixels_of

    places = _places("edge")
    shift = 0.3 / 3600 / np.cos(np.radians(places[:, 1]))
    east, west = (pixels_of(places[:, 0] + s, places[:, 1], ORDER) >> (2 * CLAIM_REGION_DELTA) for s in (shift, -shift))
    assert (east != west).all()  # the layout does put each place's two alerts in different claim regions
    block = neighbour_block(pixels_of(places[:, 0], places[:, 1], ORDER), ORDER) >> (2 * CLAIM_REGION_DELTA)
    assert (block != block[:, :1]).any(axis=1).all()
    keyspace = f"race_{uuid.uuid4().hex[:10]}"
    store = _open("cassandra", keyspace)
    try:
        a, b = _race("cassandra", keyspace, "edge")
        _check(store, a, b, "edge")
    finally:
        store.drop_keyspace()
        store.close()
