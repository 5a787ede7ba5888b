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


def _places() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.column_stack([rng.uniform(120.0, 120.05, N_PLACES), rng.uniform(-10.0, -9.95, N_PLACES)])


def _open(kind: str, where: str):
    if kind == "sqlite":
        from broker.adapters.storage.sqlite import SQLiteStore

        return SQLiteStore(where, ORDER)
    from broker.adapters.storage.cassandra import CassandraStore

    return CassandraStore(keyspace=where, association_order=ORDER)


def _worker(kind: str, where: str, name: str, barrier, out) -> None:
    store = _open(kind, where)
    places = _places()
    order = np.random.default_rng(hash(name) % 2**32).permutation(N_PLACES)
    half = 0.3 / 3600  # each worker's alert lands 0.3" from the place, on its own side
    offset = half if name == "w1" else -half
    barrier.wait()
    answers = {}
    for chunk in np.array_split(order, 12):
        cands = [(f"ALB{name}_{i}", float(places[i, 0]), float(places[i, 1] + offset)) for i in chunk]
        got = store.claim_new_loci(cands, RADIUS_ARCSEC)
        answers.update({int(c[0].split("_")[1]): got[c[0]] for c in cands})
    store.close()
    out.put((name, answers))


def _race(kind: str, where: str) -> tuple[dict[int, str], dict[int, str]]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, where, n, barrier, out)) for n in ("w1", "w2")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results["w1"], results["w2"]


def _check(store, a: dict[int, str], b: dict[int, str]) -> None:
    from broker.association import neighbour_block, pixels_of

    assert a == b, "the two workers were told different winners"
    places = _places()
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
