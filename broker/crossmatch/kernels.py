"""Numba kernels: batch cone search, nearest neighbour and per-object-radius match over a pixel-sorted index.

Layout they assume (built by :mod:`broker.crossmatch.build`): rows sorted by nested HEALPix pixel at
``order``; ``offsets[p] .. offsets[p+1]`` is the row range of pixel ``p`` (dense table, 12*4**order + 1
entries); a pixel at a coarser ``d`` covers the contiguous table range ``p << 2(order-d)``.

Distances are exact great-circle (haversine on float64); the in/out decision compares the haversine
quantity ``h = sin^2(d/2)`` with ``sin^2(r/2)``, which is monotonic in ``d``, so no acos/asin per row.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .healpix import FACE_SIDE_RAD_LOWER, candidate_pixels

D2R = math.pi / 180.0
ARCSEC = math.pi / (180.0 * 3600.0)


@nb.njit(cache=True)
def search_order(r_rad: float, order: int) -> int:
    """Deepest order <= ``order`` at which a cone of ``r_rad`` stays within a pixel's 8-neighbourhood."""
    d = order
    while d >= 0 and r_rad * (1 << d) / FACE_SIDE_RAD_LOWER + 1e-9 >= 1.0:
        d -= 1
    return d


@nb.njit(cache=True, inline="always")
def _hav(ra1: float, sd1: float, cd1: float, dec1: float, ra2: float, dec2: float) -> float:
    sdd = math.sin(0.5 * (dec2 - dec1))
    sda = math.sin(0.5 * (ra2 - ra1))
    return sdd * sdd + cd1 * math.cos(dec2) * sda * sda


@nb.njit(cache=True)
def _grow(a, n):
    b = np.empty(max(2 * a.shape[0], n + 16), dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True)
def _ranges(qra, qdec, r_rad, order, offsets, lo_out, hi_out):
    """Row ranges [lo, hi) that can hold rows within ``r_rad`` of (qra, qdec); returns how many."""
    d = search_order(r_rad, order)
    if d < 0:
        lo_out[0] = 0
        hi_out[0] = offsets[offsets.shape[0] - 1]
        return 1
    pix = np.empty(9, dtype=np.int64)
    n = candidate_pixels(qra, qdec, r_rad, d, pix)
    shift = 2 * (order - d)
    for j in range(n):
        lo_out[j] = offsets[pix[j] << shift]
        hi_out[j] = offsets[(pix[j] + 1) << shift]
    return n


@nb.njit(cache=True)
def cone_kernel(qra_deg, qdec_deg, radius_arcsec, order, offsets, ra_deg, dec_deg, per_row_radius):
    """All (query, row, haversine h) pairs with distance <= radius.

    ``radius_arcsec`` is a scalar cone radius, or, when ``per_row_radius`` has rows, the search radius
    (the catalog's largest object radius) with each row then tested against its own radius.
    """
    nq = qra_deg.shape[0]
    cap = nq + 16
    out_q = np.empty(cap, dtype=np.int64)
    out_r = np.empty(cap, dtype=np.int64)
    out_h = np.empty(cap, dtype=np.float64)
    n = 0
    r_rad = radius_arcsec * ARCSEC
    s = math.sin(0.5 * r_rad)
    h_max = s * s
    own = per_row_radius.shape[0] > 0
    lo = np.empty(9, dtype=np.int64)
    hi = np.empty(9, dtype=np.int64)
    for q in range(nq):
        ra1 = qra_deg[q] * D2R
        dec1 = qdec_deg[q] * D2R
        if not (math.isfinite(ra1) and math.isfinite(dec1)):
            continue
        sd1 = math.sin(dec1)
        cd1 = math.cos(dec1)
        nr = _ranges(ra1, dec1, r_rad, order, offsets, lo, hi)
        for j in range(nr):
            for row in range(lo[j], hi[j]):
                dec2 = dec_deg[row] * D2R
                if abs(dec2 - dec1) > r_rad:
                    continue
                h = _hav(ra1, sd1, cd1, dec1, ra_deg[row] * D2R, dec2)
                if h > h_max:
                    continue
                if own:
                    so = math.sin(0.5 * per_row_radius[row] * ARCSEC)
                    if h > so * so:
                        continue
                if n >= cap:
                    out_q = _grow(out_q, n)
                    out_r = _grow(out_r, n)
                    out_h = _grow(out_h, n)
                    cap = out_q.shape[0]
                out_q[n] = q
                out_r[n] = row
                out_h[n] = h
                n += 1
    return out_q[:n], out_r[:n], out_h[:n]


@nb.njit(cache=True)
def nearest_kernel(qra_deg, qdec_deg, radius_arcsec, order, offsets, ra_deg, dec_deg):
    """Closest row within ``radius_arcsec`` per query (-1 if none) and its haversine h (ties: lowest row)."""
    nq = qra_deg.shape[0]
    best = np.full(nq, -1, dtype=np.int64)
    best_h = np.full(nq, np.inf)
    r_rad = radius_arcsec * ARCSEC
    s = math.sin(0.5 * r_rad)
    h_max = s * s
    lo = np.empty(9, dtype=np.int64)
    hi = np.empty(9, dtype=np.int64)
    for q in range(nq):
        ra1 = qra_deg[q] * D2R
        dec1 = qdec_deg[q] * D2R
        if not (math.isfinite(ra1) and math.isfinite(dec1)):
            continue
        sd1 = math.sin(dec1)
        cd1 = math.cos(dec1)
        nr = _ranges(ra1, dec1, r_rad, order, offsets, lo, hi)
        bh = h_max
        br = -1
        for j in range(nr):
            for row in range(lo[j], hi[j]):
                dec2 = dec_deg[row] * D2R
                if abs(dec2 - dec1) > r_rad:
                    continue
                h = _hav(ra1, sd1, cd1, dec1, ra_deg[row] * D2R, dec2)
                if h < bh or (h == bh and (br < 0 or row < br)):
                    bh = h
                    br = row
        if br >= 0:
            best[q] = br
            best_h[q] = bh
    return best, best_h


def hav_to_arcsec(h: np.ndarray) -> np.ndarray:
    """Haversine quantity -> great-circle distance in arcsec (vectorised, outside the hot loop)."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))) / ARCSEC
