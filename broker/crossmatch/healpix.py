"""HEALPix nested-scheme pixel math compiled with numba, for use *inside* the cross-match kernels.

Why our own and not healpy/cdshealpix here: the kernels need, per query, not only the pixel but the
position of the point inside its pixel (continuous face coordinates).  From that we decide, exactly,
which of the 8 neighbours a cone can reach, so ~90% of 1" cones touch a single pixel (one table lookup,
one contiguous run of rows) instead of 9.  healpy is used in the tests to check these functions.

Geometry used for the "which neighbours" decision: in the HEALPix projection every base face is a
square of side pi/(2*sqrt(2)) and nested pixels are its uniform grid.  The projection's inverse
Jacobian has smallest singular value >= 0.567 everywhere (equatorial zone: cos(dec) >= 0.745; polar
caps: 0.567 at worst, combining the extremes of the shear term).  So a cone of angular radius r moves
at most ``r / (0.5 * pi / (2*sqrt(2)) / nside)`` pixel widths in face coordinates (0.5 < 0.567 leaves
margin); a cone whose centre is further than that from an edge cannot cross it.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: Lower bound of angular length per unit of face-coordinate length, in radians per face side.
FACE_SIDE_RAD_LOWER = 0.5 * math.pi / (2.0 * math.sqrt(2.0))
#: Deepest order supported (pixel ids fit int64; table sizes are the real limit).
MAX_ORDER = 24

_XOFF = np.array([-1, -1, 0, 1, 1, 1, 0, -1], dtype=np.int64)
_YOFF = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
# neighbour face, indexed [nbnum][face]; nbnum = 4 + dx + 3*dy (HEALPix C++ healpix_base.cc)
_FACEARRAY = np.array(
    [
        [8, 9, 10, 11, -1, -1, -1, -1, 10, 11, 8, 9],
        [5, 6, 7, 4, 8, 9, 10, 11, 9, 10, 11, 8],
        [-1, -1, -1, -1, 5, 6, 7, 4, -1, -1, -1, -1],
        [4, 5, 6, 7, 11, 8, 9, 10, 11, 8, 9, 10],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        [1, 2, 3, 0, 0, 1, 2, 3, 5, 6, 7, 4],
        [-1, -1, -1, -1, 7, 4, 5, 6, -1, -1, -1, -1],
        [3, 0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7],
        [2, 3, 0, 1, -1, -1, -1, -1, 0, 1, 2, 3],
    ],
    dtype=np.int64,
)
_SWAPARRAY = np.array(
    [[0, 0, 3], [0, 0, 6], [0, 0, 0], [0, 0, 5], [0, 0, 0], [5, 0, 0], [0, 0, 0], [6, 0, 0], [3, 0, 0]],
    dtype=np.int64,
)


@nb.njit(cache=True, inline="always")
def spread_bits(v: int) -> int:
    """Interleave zeros between the bits of ``v`` (x -> even bit positions)."""
    v = v & 0xFFFFFFFF
    v = (v | (v << 16)) & 0x0000FFFF0000FFFF
    v = (v | (v << 8)) & 0x00FF00FF00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v << 2)) & 0x3333333333333333
    v = (v | (v << 1)) & 0x5555555555555555
    return v


@nb.njit(cache=True, inline="always")
def compress_bits(v: int) -> int:
    """Inverse of :func:`spread_bits`: keep the even bits of ``v``, packed."""
    v = v & 0x5555555555555555
    v = (v | (v >> 1)) & 0x3333333333333333
    v = (v | (v >> 2)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FF
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFF
    v = (v | (v >> 16)) & 0x00000000FFFFFFFF
    return v


@nb.njit(cache=True, inline="always")
def xyf2nest(ix: int, iy: int, face: int, order: int) -> int:
    return (face << (2 * order)) + spread_bits(ix) + (spread_bits(iy) << 1)


@nb.njit(cache=True)
def locate(ra_rad: float, dec_rad: float, order: int):
    """Face, integer pixel coordinates and the fractional position inside the pixel.

    Returns ``(face, ix, iy, fx, fy)`` with ``fx, fy`` in [0, 1] along the pixel's x and y axes.
    Follows HEALPix ``loc2pix`` (nested), using sin(theta) near the poles for precision.
    """
    nside = 1 << order
    z = math.sin(dec_rad)
    za = abs(z)
    tt = (ra_rad * (2.0 / math.pi)) % 4.0
    if tt < 0.0:
        tt += 4.0
    if tt >= 4.0:
        tt = 0.0
    if za <= 2.0 / 3.0:
        temp1 = nside * (0.5 + tt)
        temp2 = nside * (z * 0.75)
        jp = temp1 - temp2
        jm = temp1 + temp2
        ijp = int(math.floor(jp))
        ijm = int(math.floor(jm))
        ifp = ijp >> order
        ifm = ijm >> order
        if ifp == ifm:
            face = ifp | 4
        elif ifp < ifm:
            face = ifp
        else:
            face = ifm + 8
        ix = ijm & (nside - 1)
        iy = nside - (ijp & (nside - 1)) - 1
        fx = jm - ijm
        fy = 1.0 - (jp - ijp)
    else:
        ntt = int(tt)
        if ntt > 3:
            ntt = 3
        tp = tt - ntt
        sth = math.cos(dec_rad)
        tmp = nside * sth * math.sqrt(3.0 / (1.0 + za))
        jpf = tp * tmp
        jmf = (1.0 - tp) * tmp
        ijp = int(math.floor(jpf))
        ijm = int(math.floor(jmf))
        fjp = jpf - ijp
        fjm = jmf - ijm
        if ijp > nside - 1:
            ijp = nside - 1
            fjp = 1.0
        if ijm > nside - 1:
            ijm = nside - 1
            fjm = 1.0
        if z >= 0:
            face = ntt
            ix = nside - ijm - 1
            iy = nside - ijp - 1
            fx = 1.0 - fjm
            fy = 1.0 - fjp
        else:
            face = ntt + 8
            ix = ijp
            iy = ijm
            fx = fjp
            fy = fjm
    return face, ix, iy, min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)


@nb.njit(cache=True)
def neighbour(ix: int, iy: int, face: int, order: int, k: int) -> int:
    """Nested id of neighbour ``k`` (0..7: W, NW, N, NE, E, SE, S, SW in face axes) or -1."""
    nside = 1 << order
    x = ix + _XOFF[k]
    y = iy + _YOFF[k]
    if 0 <= x < nside and 0 <= y < nside:
        return xyf2nest(x, y, face, order)
    nbnum = 4
    if x < 0:
        x += nside
        nbnum -= 1
    elif x >= nside:
        x -= nside
        nbnum += 1
    if y < 0:
        y += nside
        nbnum -= 3
    elif y >= nside:
        y -= nside
        nbnum += 3
    f = _FACEARRAY[nbnum, face]
    if f < 0:
        return -1
    bits = _SWAPARRAY[nbnum, face >> 2]
    if bits & 1:
        x = nside - x - 1
    if bits & 2:
        y = nside - y - 1
    if bits & 4:
        x, y = y, x
    return xyf2nest(x, y, f, order)


@nb.njit(cache=True)
def ang2pix_nest(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """Vectorised nested pixel ids; the same arithmetic the kernels use, so rows and queries agree."""
    out = np.empty(ra_deg.shape[0], dtype=np.int64)
    d2r = math.pi / 180.0
    for i in range(ra_deg.shape[0]):
        face, ix, iy, fx, fy = locate(ra_deg[i] * d2r, dec_deg[i] * d2r, order)
        out[i] = xyf2nest(ix, iy, face, order)
    return out


@nb.njit(cache=True)
def candidate_pixels(ra_rad: float, dec_rad: float, r_rad: float, order: int, out: np.ndarray) -> int:
    """Pixels at ``order`` that a cone of radius ``r_rad`` can touch; writes them to ``out``, returns count.

    Returns -1 if the cone may reach beyond the 8-neighbourhood at this order (caller goes coarser).
    """
    nside = 1 << order
    delta = r_rad * nside / FACE_SIDE_RAD_LOWER + 1e-9
    if delta >= 1.0:
        return -1
    face, ix, iy, fx, fy = locate(ra_rad, dec_rad, order)
    n = 0
    out[n] = xyf2nest(ix, iy, face, order)
    n += 1
    west = fx < delta
    east = fx > 1.0 - delta
    south = fy < delta
    north = fy > 1.0 - delta
    if not (west or east or south or north):
        return n
    # neighbour k: 0 W(-1,0) 1 (-1,+1) 2 (0,+1) 3 (+1,+1) 4 (+1,0) 5 (+1,-1) 6 (0,-1) 7 (-1,-1)
    for k in range(8):
        dx = _XOFF[k]
        dy = _YOFF[k]
        if dx == -1 and not west:
            continue
        if dx == 1 and not east:
            continue
        if dy == -1 and not south:
            continue
        if dy == 1 and not north:
            continue
        p = neighbour(ix, iy, face, order, k)
        if p < 0:
            continue
        dup = False
        for j in range(n):
            if out[j] == p:
                dup = True
        if not dup:
            out[n] = p
            n += 1
    return n
