"""The Cassandra write and claim paths as they were before issue 16's rework: the benchmark's baseline.

``bench.bench_store_paths`` writes the same batches through this and through
:class:`~broker.adapters.storage.cassandra.CassandraStore`, so the ratio between them is measured in
one run on the same server. Only the hot-path methods differ (copied verbatim from commit
b256541): ``save_batch`` sent multi-partition unlogged batches of ~100 rows, and
``claim_new_loci`` took an LWT lease (acquire + release, two Paxos rounds) on every association
region a candidate's 3×3 block touched; ``existing_alert_ids`` read one partition per alert id
(before migration 8's per-object index). Not for production use.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from broker.adapters.storage.cassandra import CassandraStore
from broker.adapters.storage.common import resolve_claims
from broker.alert import Alert
from broker.association import neighbour_block, pixels_of
from broker.jsonutil import dumps
from broker.locus import Locus, locus_record


def _nan_to_none(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and x != x) else x


class BaselineCassandraStore(CassandraStore):
    """The previous write/claim path over the same schema (benchmark baseline only)."""

    def existing_alert_ids(self, alerts: Any) -> set[str]:
        """The previous check: one read of ``alerts`` per alert id (which the old save_batch writes)."""
        ids = list(dict.fromkeys(a.alert_id for a in alerts))
        return {r.alert_id for rs in self._concurrent(self._sel_alert_id, [(i,) for i in ids]) for r in rs}

    def save_batch(
        self, loci: list[Locus], new_alerts: list[Alert], cutouts: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        if loci:
            pix = pixels_of(np.array([x.ra for x in loci]), np.array([x.dec for x in loci]), self.association_order)
        else:
            pix = np.empty(0, dtype=np.int64)
        regions = self._regions(pix)
        moved = [i for i, x in enumerate(loci) if x.stored_position is not None]
        old_pix = np.full(len(loci), -1, dtype=np.int64)
        if moved:
            old_pix[moved] = pixels_of(np.array([loci[i].stored_position[0] for i in moved]),
                                       np.array([loci[i].stored_position[1] for i in moved]), self.association_order)
        locus_rows, pixel_rows, catalog_rows, moves = [], [], [], []
        for x, p, reg, old in zip(loci, pix.tolist(), regions.tolist(), old_pix.tolist(), strict=True):
            locus_rows.append((x.locus_id, x.ra, x.dec, p, dumps(locus_record(x)),
                               x.internal_properties.get("newest_alert_observation_time")))
            if old >= 0 and old != p:
                moves.append(((reg, p, x.locus_id, x.ra, x.dec), (int(old) >> self.region_shift, int(old), x.locus_id)))
            else:
                pixel_rows.append((reg, p, x.locus_id, x.ra, x.dec))
            for cat, matches in x.catalog_objects.items():
                catalog_rows.append((x.locus_id, cat, x.catalog_version, dumps(matches)))
        by_locus, by_id = [], []
        for a in new_alerts:
            by_locus.append((a.locus_id, a.mjd, a.alert_id, a.survey, _nan_to_none(a.ra), _nan_to_none(a.dec),
                             a.passband, _nan_to_none(a.mag), _nan_to_none(a.magerr), _nan_to_none(a.maglim),
                             a.object_id, bool(a.is_history), dumps(a.properties)))
            by_id.append((a.alert_id, a.locus_id, a.mjd))
        cut_rows = [(aid, k, v) for aid, stamps in (cutouts or {}).items() for k, v in stamps.items()]
        # Order matters for crash safety: loci and alert rows first, the per-id alert rows (the
        # "processed" mark) only after all of them succeeded. A locus's alerts share a partition, so
        # they go as one unlogged batch (one request, applied atomically on that partition).
        from cassandra.query import BatchStatement, BatchType

        phase1: list[tuple[Any, Any]] = self._small_batches(self._ins_locus, locus_rows)
        # Small rows of many partitions go as unlogged multi-partition batches: one request per
        # ~100 rows instead of one each. On a cluster that costs the coordinator a fan-out, which
        # is still far cheaper than the per-request overhead that bounds throughput here.
        phase1 += self._small_batches(self._ins_pixel, pixel_rows)
        # A locus whose mean crossed into another association pixel: its new row and the removal
        # of the old one go as one logged batch (both or neither), so association never sees the
        # locus twice or not at all. Rare: a mean moves by a fraction of an arcsecond, pixels are ~6".
        for new_row, old_key in moves:
            batch = BatchStatement(batch_type=BatchType.LOGGED, consistency_level=self._quorum)
            batch.add(self._ins_pixel, new_row)
            batch.add(self._del_pixel, old_key)
            phase1.append((batch, None))
        phase1 += [(self._ins_catalog, r) for r in catalog_rows]
        phase1 += [(self._ins_cutout, r) for r in cut_rows]
        per_locus: dict[str, list[tuple]] = {}
        for row in by_locus:
            per_locus.setdefault(row[0], []).append(row)
        for rows in per_locus.values():
            for i in range(0, len(rows), 50):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self._cl)
                for row in rows[i : i + 50]:
                    batch.add(self._ins_alert_by_locus, row)
                phase1.append((batch, None))
        self._concurrent_mixed(phase1)
        self._concurrent_mixed(self._small_batches(self._ins_alert, by_id))
        for x in loci:
            x.stored_position = (x.ra, x.dec)

    def _small_batches(self, stmt: Any, rows: list[tuple], size: int = 100,
                       max_bytes: int = 32_000) -> list[tuple[Any, Any]]:
        """Group rows into unlogged batches of at most ``size`` rows and ~``max_bytes``.

        The byte budget keeps multi-partition batches under Cassandra's batch size failure
        threshold (50 KiB by default); a single row larger than the budget goes alone.
        """
        from cassandra.query import BatchStatement, BatchType

        out: list[tuple[Any, Any]] = []
        batch, n, nbytes = None, 0, 0
        for row in rows:
            est = 16 + sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
            if batch is not None and (n >= size or nbytes + est > max_bytes):
                out.append((batch, None))
                batch = None
            if batch is None:
                batch, n, nbytes = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self._cl), 0, 0
            batch.add(stmt, row)
            n += 1
            nbytes += est
        if batch is not None:
            out.append((batch, None))
        return out

    def claim_new_loci(self, candidates: Sequence[tuple[str, float, float]], radius_arcsec: float,
                       known: Any = None) -> dict[str, str]:
        if not candidates:
            return {}
        ra = np.array([c[1] for c in candidates], dtype=float)
        dec = np.array([c[2] for c in candidates], dtype=float)
        pix = pixels_of(ra, dec, self.association_order)
        block = neighbour_block(pix, self.association_order)
        block_pixels = block[block >= 0]
        regions = sorted(set(self._regions(block_pixels).tolist()))
        self._acquire(regions)
        try:
            existing = self.locus_positions(block_pixels.tolist(), _quorum=True)
            winners, to_write = resolve_claims(candidates, existing, self.association_order, radius_arcsec)
            rows = [(int(pix[i]) >> self.region_shift, int(pix[i]), candidates[i][0], float(ra[i]), float(dec[i]))
                    for i in to_write]
            self._concurrent(self._ins_pixel, rows)
        finally:
            self._release(regions)
        return winners

    def _acquire(self, regions: list[int], timeout_s: float = 120.0) -> None:
        """Take the LWT lease of every region, all or none; back off and retry on contention."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            results = self._concurrent(self._lock_stmt, [(r, self._owner) for r in regions])
            got = [r for r, res in zip(regions, results, strict=True)
                   if res.was_applied or res.one().owner == self._owner]
            if len(got) == len(regions):
                return
            self._release(got)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not lock {len(regions) - len(got)} sky region(s) in {timeout_s:.0f}s")
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)

    def _release(self, regions: list[int]) -> None:
        self._concurrent(self._unlock, [(r, self._owner) for r in regions])

