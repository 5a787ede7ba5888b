"""Alert → locus association: the nearest locus within a radius, else a new locus.

A locus's position is the mean of its detections (their unit vectors), as ANTARES keeps it, so
it moves a little as alerts join; that is what keeps one object in one locus when its first
alert was an outlier. Association therefore runs in observation order: each alert joins the
locus nearest to it *as that locus stands when the alert arrives* (earlier alerts of the same
batch included), or founds a new one.

Loci are bucketed by HEALPix nested pixel at an order chosen so that a pixel plus its 8
neighbours always contains the whole association disc. A batch is matched in three steps:

1. pixel and neighbour pixels for every alert (cdshealpix, one call each);
2. one store read for every locus in those pixels (the caller also loads the loci an alert of
   the batch could join, for the detections that make their running mean exact);
3. one numba kernel that walks the alerts in order, scans only the loci currently in each
   alert's 9 pixels with the exact great-circle distance (correct across RA 0/360 and at the
   poles, where HEALPix neighbours already wrap), and moves the joined locus — to another pixel
   bucket when its mean crosses a pixel edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.typed import Dict

from broker.crossmatch.healpix import locate, xyf2nest

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


@njit(cache=True)
def _associate_in_order(q_ra, q_dec, q_pix, q_obj, blocks, e_pix, e_ra, e_dec, e_w, e_sum, e_obj_locus, e_obj_code,
                        radius, object_radius, order):
    """The sequential association of one batch (all angles in radians); see :meth:`Associator.associate`.

    Loci 0..M-1 are the existing ones, M.. the ones founded here. ``e_w`` is how many detections
    an existing position averages (``e_sum`` their unit-vector sum); -1 marks a position that
    does not move (nothing to average it with). ``q_obj`` is each alert's survey-object code (-1:
    none); (``e_obj_locus``, ``e_obj_code``) pairs say which objects the existing loci hold.
    Each pixel keeps a linked list of the loci that entered it; a locus that moved on is skipped
    there (``pix[k] != p``).
    Returns (locus index per alert, distance per alert, founding alert per new locus).
    """
    n = q_ra.shape[0]
    m = e_ra.shape[0]
    cap = m + n
    pix = np.empty(cap, dtype=np.int64)
    ra = np.empty(cap)
    dec = np.empty(cap)
    w = np.empty(cap)
    s = np.zeros((cap, 3))
    for k in range(m):
        pix[k] = e_pix[k]
        ra[k] = e_ra[k]
        dec[k] = e_dec[k]
        w[k] = e_w[k]
        s[k, 0] = e_sum[k, 0]
        s[k, 1] = e_sum[k, 1]
        s[k, 2] = e_sum[k, 2]
    holds = Dict.empty(key_type=types.int64, value_type=types.int64)  # code * cap + locus → 1
    for j in range(e_obj_locus.shape[0]):
        holds[e_obj_code[j] * cap + e_obj_locus[j]] = 1
    ent_locus = np.empty(m + 2 * n, dtype=np.int64)
    ent_next = np.empty(m + 2 * n, dtype=np.int64)
    head = Dict.empty(key_type=types.int64, value_type=types.int64)
    ne = 0
    for k in range(m):
        ent_locus[ne] = k
        ent_next[ne] = head[pix[k]] if pix[k] in head else -1
        head[pix[k]] = ne
        ne += 1

    reach = max(radius, object_radius)
    assign = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.nan)
    founders = np.full(n, -1, dtype=np.int64)
    nloc = m
    for i in range(n):
        best = -1
        best_d = np.inf
        same = -1  # the nearest locus that already holds this alert's survey object
        same_d = np.inf
        code = q_obj[i]
        for j in range(blocks.shape[1]):
            p = blocks[i, j]
            if p < 0:
                continue
            e = head[p] if p in head else -1
            while e >= 0:
                k = ent_locus[e]
                if pix[k] == p:
                    d = _angular_distance(q_ra[i], q_dec[i], ra[k], dec[k])
                    if d <= reach:
                        if d <= radius and (d < best_d or (d == best_d and k < best)):
                            best_d = d
                            best = k
                        if (code >= 0 and d <= object_radius and code * cap + k in holds
                                and (d < same_d or (d == same_d and k < same))):
                            same_d = d
                            same = k
                e = ent_next[e]
        if same >= 0:
            best = same
            best_d = same_d
        cd = math.cos(q_dec[i])
        vx = cd * math.cos(q_ra[i])
        vy = cd * math.sin(q_ra[i])
        vz = math.sin(q_dec[i])
        if best < 0:
            k = nloc
            nloc += 1
            founders[k - m] = i
            pix[k] = q_pix[i]
            ra[k] = q_ra[i]
            dec[k] = q_dec[i]
            w[k] = 1.0
            s[k, 0] = vx
            s[k, 1] = vy
            s[k, 2] = vz
            if code >= 0:
                holds[code * cap + k] = 1
            ent_locus[ne] = k
            ent_next[ne] = head[pix[k]] if pix[k] in head else -1
            head[pix[k]] = ne
            ne += 1
            assign[i] = k
            continue
        assign[i] = best
        dist[i] = best_d
        if code >= 0:
            holds[code * cap + best] = 1
        if w[best] < 0:
            continue
        w[best] += 1.0
        s[best, 0] += vx
        s[best, 1] += vy
        s[best, 2] += vz
        if w[best] == 1.0:  # a claimed position no detection backed yet: it becomes this alert's
            ra[best] = q_ra[i]
            dec[best] = q_dec[i]
        else:
            r = math.atan2(s[best, 1], s[best, 0])
            if r < 0.0:
                r += 2.0 * math.pi
            ra[best] = r
            dec[best] = math.atan2(s[best, 2], math.hypot(s[best, 0], s[best, 1]))
        face, ix, iy, fx, fy = locate(ra[best], dec[best], order)
        newp = xyf2nest(ix, iy, face, order)
        if newp != pix[best]:
            pix[best] = newp
            ent_locus[ne] = best
            ent_next[ne] = head[newp] if newp in head else -1
            head[newp] = ne
            ne += 1
    return assign, dist, founders[: nloc - m]


@dataclass
class LocusPositions:
    """A columnar set of known loci: id, position (degrees) and association pixel.

    ``weight``/``sums`` say what a position averages: how many detections, and the sum of their
    unit vectors (N×3). Without them (``None``, or a weight of -1) a position is fixed: nothing
    in this batch can move it. A weight of 0 is a claimed place no detection backs yet.
    ``objects`` lists, per locus, the survey objects it holds (``"ztf:ZTF18aauseln"``).
    """

    locus_ids: list[str]
    ra: np.ndarray
    dec: np.ndarray
    pixel: np.ndarray
    weight: np.ndarray | None = None
    sums: np.ndarray | None = None
    objects: list[frozenset[str]] | None = None

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
    #: distance to the matched locus as it stood when the alert joined, arcsec (NaN for founders).
    distance_arcsec: np.ndarray


class Associator:
    """Matches alert positions to loci within ``radius_arcsec``.

    ``object_radius_arcsec`` (0: off) widens the match for an alert whose survey object (ZTF
    ``objectId``, Rubin ``diaObjectId``) a locus already holds: the survey itself associated the
    detection with that object (ZTF within 1.5″), so it joins the locus of that object when
    within this distance, even past ``radius_arcsec``. It must stay within the 3×3 pixel block the
    store's pixels guarantee (``≤ 2 × radius_arcsec``).
    """

    def __init__(self, radius_arcsec: float = 1.0, object_radius_arcsec: float = 0.0):
        self.radius_arcsec = float(radius_arcsec)
        self.object_radius_arcsec = float(object_radius_arcsec)
        if self.object_radius_arcsec > 2 * self.radius_arcsec:
            raise ValueError(f"object radius {object_radius_arcsec}\" exceeds twice the radius {radius_arcsec}\", "
                             "beyond what the association pixels cover")
        self.order = association_order(self.radius_arcsec)

    @classmethod
    def from_config(cls, association) -> Associator:
        """From the ``[association]`` configuration section (:class:`broker.config.AssociationConfig`)."""
        return cls(association.radius_arcsec, association.object_radius_arcsec)

    @property
    def reach_arcsec(self) -> float:
        """The farthest an alert can join a locus from: the larger of the two radii."""
        return max(self.radius_arcsec, self.object_radius_arcsec)

    def pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The association pixel of each position and the 3×3 block of pixels to search."""
        pix = pixels_of(ra, dec, self.order)
        return pix, neighbour_block(pix, self.order)

    def reachable(self, ra: np.ndarray, dec: np.ndarray, existing: LocusPositions) -> np.ndarray:
        """Which ``existing`` loci lie within reach of at least one alert (the ones that can move).

        A locus no alert reaches at its stored position cannot move in this batch (it moves
        only by taking an alert), so only these need the detections behind their mean.
        """
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if not existing.locus_ids or ra.size == 0:
            return np.zeros(len(existing.locus_ids), dtype=bool)
        # the loci are the queries here, the alerts the candidates: the nearest alert of each locus
        pix = pixels_of(ra, dec, self.order)
        order = np.argsort(pix, kind="stable")
        nearest, _ = nearest_in_blocks(np.radians(existing.ra), np.radians(existing.dec),
                                       neighbour_block(existing.pixel, self.order), pix[order],
                                       np.radians(ra[order]), np.radians(dec[order]), self.reach_arcsec * ARCSEC)
        return nearest >= 0

    def associate(
        self, ra: np.ndarray, dec: np.ndarray, existing: LocusPositions, blocks: np.ndarray | None = None,
        objects: list[str | None] | None = None,
    ) -> Association:
        """Associate alerts *in the order given* (the caller sorts them by observation time).

        Each alert joins, as the loci stand at that moment (moved by the alerts of this batch
        that joined them before, or founded earlier in the batch): the nearest locus holding its
        survey object (``objects``, e.g. ``"ztf:ZTF18aauseln"``) within ``object_radius_arcsec``,
        else the nearest locus within ``radius_arcsec``, and moves it to the new mean of its
        detections; with none in reach it founds a locus at its own position. Ties go to the
        smaller locus id (existing loci) or the earlier founder, so the result depends only on
        the inputs.
        """
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        n = ra.shape[0]
        if n == 0:
            empty = np.empty(0, dtype=np.int64)
            return Association(empty, empty.copy(), [], np.empty(0))
        pix = pixels_of(ra, dec, self.order)
        if blocks is None:
            blocks = neighbour_block(pix, self.order)
        # a stable order (by id) for ties; remember where each row came from
        first: dict[str, int] = {}
        for i, lid in enumerate(existing.locus_ids):
            first.setdefault(lid, i)
        rows = np.array([first[k] for k in sorted(first)], dtype=np.int64)
        m = rows.size
        if existing.weight is not None and existing.sums is not None:
            weight = np.asarray(existing.weight, dtype=np.float64)[rows]
            sums = np.asarray(existing.sums, dtype=np.float64).reshape(-1, 3)[rows]
        else:
            weight = np.full(m, -1.0)
            sums = np.zeros((m, 3))
        codes: dict[str, int] = {}
        q_obj = np.array([-1 if o is None else codes.setdefault(o, len(codes)) for o in (objects or [None] * n)],
                         dtype=np.int64)
        pairs = [(j, codes[o]) for j, r in enumerate(rows.tolist())
                 for o in ((existing.objects[r] if existing.objects is not None else ()) or ()) if o in codes]
        obj_locus = np.array([p[0] for p in pairs], dtype=np.int64)
        obj_code = np.array([p[1] for p in pairs], dtype=np.int64)
        assign, dist, founders = _associate_in_order(
            np.radians(ra), np.radians(dec), pix.astype(np.int64), q_obj, blocks.astype(np.int64),
            existing.pixel[rows].astype(np.int64) if m else np.empty(0, dtype=np.int64),
            np.radians(existing.ra[rows]) if m else np.empty(0), np.radians(existing.dec[rows]) if m else np.empty(0),
            weight, np.ascontiguousarray(sums), obj_locus, obj_code, self.radius_arcsec * ARCSEC,
            self.object_radius_arcsec * ARCSEC, self.order)
        old = assign < m
        existing_index = np.full(n, -1, dtype=np.int64)
        existing_index[old] = rows[assign[old]]
        new_group = np.where(old, -1, assign - m).astype(np.int64)
        return Association(existing_index, new_group, founders.tolist(), dist / ARCSEC)
