"""Each event's sky map as a multi-order HEALPix FITS file (``UNIQ``/``PROBDENSITY``), as LVK distributes them.

* A map notice: its stored map (multi-order as sent, a flat map converted), normalised.
* A circle, an ellipse, several circles: the density of the model the coincidences used
  (:mod:`~broker.multimessenger.localization`: von Mises–Fisher for a circle, the tangent-plane
  Gaussian for an ellipse, an equal-weight mixture for several circles), sampled adaptively: the
  whole sky at order 3, cells refined where they can reach the 99.99 % region, down to cells of
  about a tenth of the 90 % radius. Probabilities are normalised to sum to one.

The file is what ``ligo.skymap.io.read_sky_map(path, moc=True)`` and mocpy's
``MOC.from_multiordermap_fits_file`` read: a BINTABLE with ``PIXTYPE = HEALPIX``,
``ORDERING = NUNIQ``, ``COORDSYS = C``, ``MOCORDER``, ``INDXSCHM = EXPLICIT``, plus the
catalog's provenance and licence cards.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from broker.multimessenger.localization import (
    Circle,
    Ellipse,
    Localization,
    MultiOrderMap,
    Union,
    angular_distance_deg,
)

BASE_ORDER = 3
MAX_ORDER = 14


def _circle_density(c: Circle, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    theta = np.radians(angular_distance_deg(ra, dec, *c.center))
    one_minus_cos = 2 * np.sin(theta / 2) ** 2
    return c.kappa / (2 * np.pi * -math.expm1(-2 * c.kappa)) * np.exp(-c.kappa * one_minus_cos)  # per sr


def _ellipse_density(e: Ellipse, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    # level = 1 - (1-p)^(d²): a Gaussian with s² = -2 ln(1-p) d², σ_a = a / sqrt(-2 ln(1-p)) (deg)
    k = -2.0 * e._log1mp
    d2 = e._d2(ra, dec)
    sa, sb = e.a / math.sqrt(k), e.b / math.sqrt(k)
    per_deg2 = np.exp(-0.5 * k * np.where(np.isfinite(d2), d2, np.inf)) / (2 * np.pi * sa * sb)
    return per_deg2 * (180.0 / math.pi) ** 2


def _parts(loc: Localization) -> list[Localization]:
    return list(loc.parts) if isinstance(loc, Union) else [loc]


def _reach_deg(part: Localization) -> float:
    """A radius holding 99.99 % of a part's probability."""
    if isinstance(part, Circle):
        return part.radius_at(99.99)
    s = part._scale(99.99)
    return part.a * s


def _scale_deg(part: Localization) -> float:
    return part.radius_at(90.0) if isinstance(part, Circle) else part.b * part._scale(90.0)


def _density(parts: list[Localization], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    out = np.zeros(ra.shape)
    for p in parts:
        out += (_circle_density(p, ra, dec) if isinstance(p, Circle) else _ellipse_density(p, ra, dec)) / len(parts)
    return out


def sample_shape(loc: Localization) -> tuple[np.ndarray, np.ndarray]:
    """(uniq, probdensity per sr) of a circle/ellipse/union model, adaptively refined."""
    import astropy_healpix as ah

    parts = _parts(loc)
    if not all(isinstance(p, Circle | Ellipse) for p in parts):
        raise TypeError(f"cannot sample {type(loc).__name__}")
    target = min(MAX_ORDER, max(BASE_ORDER, int(math.ceil(math.log2(58.6 / max(min(_scale_deg(p) for p in parts) / 10,
                                                                              1e-6))))))
    keep_u, keep_d = [], []
    order = BASE_ORDER
    ipix = np.arange(12 * 4**order, dtype=np.int64)
    while True:
        lon, lat = ah.healpix_to_lonlat(ipix, 2**order, order="nested")
        ra, dec = lon.deg, lat.deg
        dens = _density(parts, ra, dec)
        cell = math.degrees(math.sqrt(4 * math.pi / (12 * 4**order)))
        near = np.zeros(ipix.shape, dtype=bool)
        if order < target:
            for p in parts:
                near |= angular_distance_deg(ra, dec, *p.center) <= _reach_deg(p) + cell
        keep_u.append(4 * 4**order + ipix[~near])
        keep_d.append(dens[~near])
        if not near.any():
            break
        ipix = (ipix[near][:, None] * 4 + np.arange(4)).ravel()
        order += 1
    uniq = np.concatenate(keep_u)
    density = np.concatenate(keep_d)
    orders = np.floor(np.log2(uniq // 4) / 2).astype(np.int64)
    prob = density * 4 * np.pi / (12 * 4.0**orders)
    density = density / prob.sum()
    srt = np.argsort(uniq)
    return uniq[srt], density[srt]


def multiorder_columns(loc: Localization) -> tuple[np.ndarray, np.ndarray]:
    """(uniq, probdensity per sr, normalised) for any localization."""
    if isinstance(loc, MultiOrderMap):
        orders = np.asarray(loc._order, dtype=np.int64)
        prob = loc.density * 4 * np.pi / (12 * 4.0**orders)
        srt = np.argsort(loc.uniq)
        return loc.uniq[srt].astype(np.int64), (loc.density / prob.sum())[srt]
    return sample_shape(loc)


def multiorder_fits(loc: Localization, header: dict[str, Any]) -> bytes:
    """The FITS bytes of ``loc`` as a multi-order map, with ``header`` cards added (OBJECT, licence ...)."""
    from astropy.io import fits
    from astropy.table import Table

    uniq, density = multiorder_columns(loc)
    t = Table([uniq, density], names=("UNIQ", "PROBDENSITY"))
    t["PROBDENSITY"].unit = "sr-1"
    hdu = fits.table_to_hdu(t)
    orders = np.floor(np.log2(uniq // 4) / 2).astype(int)
    h = hdu.header
    h["PIXTYPE"] = ("HEALPIX", "HEALPIX pixelisation")
    h["ORDERING"] = ("NUNIQ", "Pixel ordering scheme: RING, NESTED, or NUNIQ")
    h["COORDSYS"] = ("C", "Ecliptic, Galactic or Celestial (equatorial)")
    h["MOCORDER"] = (int(orders.max()), "MOC resolution (best order)")
    h["INDXSCHM"] = ("EXPLICIT", "Indexing: IMPLICIT or EXPLICIT")
    for key, value in header.items():
        if value is not None:
            h[key[:8].upper()] = value
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()
