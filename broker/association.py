"""Alert → locus association: the nearest locus within a radius, else a new locus.

Loci are bucketed by HEALPix nested pixel at an order chosen so that a pixel
plus its 8 neighbours always contains the whole association disc. A batch of
alerts is matched in three vectorised steps:

1. pixel and neighbour pixels for every alert (cdshealpix, one call each);
2. one store read for every locus in those pixels;
3. a numba kernel that scans only the candidates of each alert's 9 pixels with
   the exact great-circle distance (correct across RA 0/360 and at the poles,
   where HEALPix neighbours already wrap).

Alerts that match nothing are then grouped among themselves, in arrival order,
so that two alerts of the same batch at the same place create one locus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

ARCSEC = math.pi / (180.0 * 3600.0)


def association_order(radius_arcsec: float) -> int:
    """The deepest HEALPix order whose pixels are still comfortably wider than the radius.

    The smallest pixel edge at order k is ~0.6 of the mean size
    sqrt(4π / (12·4^k)); requiring the mean size ≥ 4·radius keeps every point
    of the disc inside the 3×3 block around the centre's pixel, poles included.
    """
    radius = max(radius_arcsec, 1e-3) * ARCSEC
    order = 0
    while order < 29:
        size = math.sqrt(4 * math.pi / (12 * 4 ** (order + 1)))
        if size < 4 * radius:
            break
        order += 1
    return order


def pixels_of(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """HEALPix nested pixel of each position (uint64 → int64)."""
    import cdshealpix.nested as hp
    from astropy import units as u

    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    if ra.size == 0:
        return np.empty(0, dtype=np.int64)
    return hp.lonlat_to_healpix(ra * u.deg, dec * u.deg, order).astype(np.int64)


def neighbour_block(pixels: np.ndarray, order: int) -> np.ndarray:
    """Each pixel and its (up to 8) neighbours: shape (N, 9), -1 where a neighbour is missing."""
    import cdshealpix.nested as hp

    if pixels.size == 0:
        return np.empty((0, 9), dtype=np.int64)
    return hp.neighbours(pixels.astype(np.uint64), order).astype(np.int64)


@njit(cache=True, fastmath=False)
def _angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance (radians) by the haversine formula, stable for tiny angles."""
    s1 = math.sin((dec2 - dec1) * 0.5)
    s2 = math.sin((ra2 - ra1) * 0.5)
    h = s1 * s1 + math.cos(dec1) * math.cos(dec2) * s2 * s2
    if h > 1.0:
        h = 1.0
    return 2.0 * math.asin(math.sqrt(h))


@njit(cache=True)
def nearest_in_blocks(q_ra, q_dec, blocks, cand_pix, cand_ra, cand_dec, radius):
    """Index of the nearest candidate within ``radius`` (radians) of each query, or -1.

    ``cand_pix`` must be sorted; the candidates of a pixel are found by binary
    search, so the work per query is proportional to its 9 pixels' contents.
    All angles in radians.
    """
    n = q_ra.shape[0]
    best = np.full(n, -1, dtype=np.int64)
    best_d = np.full(n, np.inf)
    for i in range(n):
        for j in range(blocks.shape[1]):
            p = blocks[i, j]
            if p < 0:
                continue
            lo = np.searchsorted(cand_pix, p, side="left")
            hi = np.searchsorted(cand_pix, p, side="right")
            for k in range(lo, hi):
                d = _angular_distance(q_ra[i], q_dec[i], cand_ra[k], cand_dec[k])
                if d <= radius and (d < best_d[i] or (d == best_d[i] and k < best[i])):
                    best_d[i] = d
                    best[i] = k
    return best, best_d


@dataclass
class LocusPositions:
    """A columnar set of known loci: id, position (degrees) and association pixel."""

    locus_ids: list[str]
    ra: np.ndarray
    dec: np.ndarray
    pixel: np.ndarray

    @classmethod
    def empty(cls) -> LocusPositions:
        z = np.empty(0)
        return cls([], z, z.copy(), np.empty(0, dtype=np.int64))


@dataclass
class Association:
    """Result for one batch: for each alert, the locus it joins (existing or new)."""

    #: per input alert: the index into ``existing.locus_ids`` or -1.
    existing_index: np.ndarray
    #: per input alert: the index of the new locus it founds or joins, or -1.
    new_group: np.ndarray
    #: for each new locus, the input alert that founds it (its position becomes the locus's).
    new_founders: list[int]
    #: distance to the matched locus, arcsec (NaN for new loci founders).
    distance_arcsec: np.ndarray


class Associator:
    """Matches alert positions to loci within ``radius_arcsec``."""

    def __init__(self, radius_arcsec: float = 1.0):
        self.radius_arcsec = float(radius_arcsec)
        self.order = association_order(self.radius_arcsec)

    def pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The association pixel of each position and the 3×3 block of pixels to search."""
        pix = pixels_of(ra, dec, self.order)
        return pix, neighbour_block(pix, self.order)

    def associate(
        self, ra: np.ndarray, dec: np.ndarray, existing: LocusPositions, blocks: np.ndarray | None = None
    ) -> Association:
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if blocks is None:
            _, blocks = self.pixels(ra, dec)
        radius = self.radius_arcsec * ARCSEC
        order = np.argsort(existing.pixel, kind="stable")
        best, best_d = nearest_in_blocks(
            np.radians(ra),
            np.radians(dec),
            blocks,
            existing.pixel[order],
            np.radians(existing.ra[order]),
            np.radians(existing.dec[order]),
            radius,
        )
        existing_index = np.full(best.shape[0], -1, dtype=np.int64)
        hit = best >= 0
        existing_index[hit] = order[best[hit]]
        distance = np.where(best >= 0, best_d / ARCSEC, np.nan)

        # Alerts that matched no stored locus: found new loci, joining one another
        # when they fall within the radius of a locus founded earlier in the batch.
        new_group = np.full(ra.shape[0], -1, dtype=np.int64)
        founders: list[int] = []
        unmatched = np.flatnonzero(existing_index < 0)
        if unmatched.size:
            pix_of = pixels_of(ra[unmatched], dec[unmatched], self.order)
            by_pixel: dict[int, list[int]] = {}
            for i, p in zip(unmatched.tolist(), pix_of.tolist(), strict=True):
                nearest, nearest_d = -1, np.inf
                for q in blocks[i]:
                    for g in by_pixel.get(int(q), ()):
                        f = founders[g]
                        d = _angular_distance(
                            math.radians(ra[i]), math.radians(dec[i]), math.radians(ra[f]), math.radians(dec[f])
                        )
                        if d <= radius and d < nearest_d:
                            nearest, nearest_d = g, d
                if nearest >= 0:
                    new_group[i] = nearest
                    distance[i] = nearest_d / ARCSEC
                else:
                    new_group[i] = len(founders)
                    by_pixel.setdefault(p, []).append(len(founders))
                    founders.append(i)
        return Association(existing_index, new_group, founders, distance)
