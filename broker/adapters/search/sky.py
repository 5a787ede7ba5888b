"""Sky geometry shared by the search backends: ANTARES's ``sky_distance`` filter and cone helpers.

ANTARES users write cone searches as
``{"sky_distance": {"distance": "0.01 degree", "htm16": {"center": "20h10m32.2s +20d07m10.1s"}}}``
(older style) or ``{"sky_distance": {"radius": "0.01 degree", "location": "20h10m32.2s +20d07m10.1s"}}``.
Both indexes turn that into one ``(ra, dec, radius)`` cone; parsing lives here so the embedded and
the Elasticsearch backend accept exactly the same spellings and fail with the same messages.

Cone pre-selection uses HEALPix pixel ranges (``cdshealpix.nested.cone_search``), then the exact
great-circle distance (haversine, stable for arcsecond radii) decides.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from broker.ports import QueryError

#: unit name → degrees per unit.
_UNITS = {
    "degree": 1.0, "degrees": 1.0, "deg": 1.0, "d": 1.0,
    "arcmin": 1 / 60, "arcminute": 1 / 60, "arcminutes": 1 / 60, "amin": 1 / 60, "'": 1 / 60,
    "arcsec": 1 / 3600, "arcsecond": 1 / 3600, "arcseconds": 1 / 3600, "asec": 1 / 3600, '"': 1 / 3600,
}

#: the largest cone either backend accepts (a hemisphere: beyond that, a cone is not a useful filter).
MAX_RADIUS_DEG = 90.0

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RADIUS_RE = re.compile(rf"^\s*({_NUM})\s*([a-zA-Z'\"]+)\s*$")
_HMS_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*h\s*(?:(\d+(?:\.\d*)?)\s*m)?\s*(?:(\d+(?:\.\d*)?)\s*s?)?\s*$", re.I)
_DMS_RE = re.compile(
    r"^\s*([+-]?)\s*(\d+(?:\.\d*)?)\s*d\s*(?:(\d+(?:\.\d*)?)\s*m)?\s*(?:(\d+(?:\.\d*)?)\s*s?)?\s*$", re.I
)
_SEXA_RE = re.compile(r"^\s*([+-]?)(\d+):(\d+)(?::(\d+(?:\.\d*)?))?\s*$")


def parse_radius(text: Any) -> float:
    """``"0.01 degree"`` / ``"3 arcsec"`` / ``"1.5 arcmin"`` (or a bare number of degrees) → degrees."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _RADIUS_RE.match(str(text))
        if not m:
            raise QueryError(f"sky_distance radius {text!r}: expected '<number> <degree|arcmin|arcsec>'")
        unit = m.group(2).lower()
        if unit not in _UNITS:
            raise QueryError(f"sky_distance radius {text!r}: unknown unit {m.group(2)!r} "
                             "(use degree, arcmin or arcsec)")
        value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value <= 0 or value > MAX_RADIUS_DEG:
        raise QueryError(f"sky_distance radius {text!r}: must be > 0 and ≤ {MAX_RADIUS_DEG} degrees")
    return value


def _ra_part(token: str) -> float:
    m = _HMS_RE.match(token)
    if m:
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        if mi >= 60 or s >= 60:
            raise ValueError(token)
        return 15.0 * (h + mi / 60 + s / 3600)
    m = _SEXA_RE.match(token)
    if m:
        if m.group(1):
            raise ValueError(token)
        h, mi, s = float(m.group(2)), float(m.group(3)), float(m.group(4) or 0)
        return 15.0 * (h + mi / 60 + s / 3600)
    return float(token)


def _dec_part(token: str) -> float:
    for rx in (_DMS_RE, _SEXA_RE):
        m = rx.match(token)
        if m:
            sign = -1.0 if m.group(1) == "-" else 1.0
            d, mi, s = (float(g) if g else 0.0 for g in m.groups()[1:])
            if mi >= 60 or s >= 60:
                raise ValueError(token)
            return sign * (d + mi / 60 + s / 3600)
    return float(token)


def parse_location(text: Any) -> tuple[float, float]:
    """A sky position → (ra, dec) degrees.

    Accepts ``"20h10m32.2s +20d07m10.1s"``, ``"20:10:32.2 +20:07:10.1"`` (RA in hours),
    ``"302.634 20.119"`` / ``"302.634, 20.119"`` (decimal degrees), or a ``[ra, dec]`` pair.
    """
    if isinstance(text, (list, tuple)) and len(text) == 2:
        tokens = [str(t) for t in text]
    elif isinstance(text, dict) and {"ra", "dec"} <= set(text):
        tokens = [str(text["ra"]), str(text["dec"])]
    else:
        tokens = [t for t in re.split(r"[\s,]+", str(text).strip()) if t]
        if len(tokens) != 2:
            # "20h 10m 32.2s +20d 07m 10.1s": split at the declination's d-group start.
            m = re.match(r"^(.*?[hH].*?)\s+([+-]?\s*\d+(?:\.\d*)?\s*[dD].*)$", str(text).strip())
            tokens = [m.group(1), m.group(2)] if m else tokens
    if len(tokens) != 2:
        raise QueryError(f"sky_distance location {text!r}: expected 'RA Dec' (hmsdms or decimal degrees)")
    try:
        ra, dec = _ra_part(tokens[0]), _dec_part(tokens[1])
    except ValueError:
        raise QueryError(f"sky_distance location {text!r}: cannot read it as hmsdms or decimal degrees") from None
    if not (math.isfinite(ra) and math.isfinite(dec)) or not (0.0 <= ra <= 360.0) or not (-90.0 <= dec <= 90.0):
        raise QueryError(f"sky_distance location {text!r}: RA must be in [0, 360], Dec in [-90, 90]")
    return ra % 360.0, dec


def parse_sky_distance(spec: Any) -> tuple[float, float, float]:
    """The body of one ``sky_distance`` filter → (ra, dec, radius) in degrees."""
    if not isinstance(spec, dict):
        raise QueryError("sky_distance must be an object with 'radius' and 'location'")
    radius = spec.get("radius", spec.get("distance"))
    location = spec.get("location")
    if location is None and isinstance(spec.get("htm16"), dict):  # the older ANTARES spelling
        location = spec["htm16"].get("center")
    if radius is None or location is None:
        raise QueryError("sky_distance needs 'radius' (e.g. '0.01 degree') and 'location' (e.g. "
                         "'20h10m32.2s +20d07m10.1s')")
    extra = set(spec) - {"radius", "distance", "location", "htm16"}
    if extra:
        raise QueryError(f"sky_distance: unknown key(s) {sorted(extra)}")
    ra, dec = parse_location(location)
    return ra, dec, parse_radius(radius)


def check_cone(cone: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate a structured ``LocusQuery.cone``."""
    try:
        ra, dec, radius = (float(x) for x in cone)
    except (TypeError, ValueError):
        raise QueryError(f"cone {cone!r}: expected (ra, dec, radius) in degrees") from None
    if not (math.isfinite(ra) and -90.0 <= dec <= 90.0 and 0 < radius <= MAX_RADIUS_DEG):
        raise QueryError(f"cone {cone!r}: need finite RA, Dec in [-90, 90], 0 < radius ≤ {MAX_RADIUS_DEG}")
    return ra % 360.0, dec, radius


def angular_distance_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in degrees (haversine; vectorised; exact to ~1e-12 deg at small angles)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def cone_pixel_ranges(ra: float, dec: float, radius: float, order: int, max_ranges: int = 64) -> list[tuple[int, int]]:
    """Inclusive ranges of order-``order`` nested pixels covering the cone (a superset of it).

    The cone is covered at the deepest depth ≤ ``order`` that keeps the cover below ``max_ranges``
    contiguous ranges, so a tiny cone gives a few narrow ranges and a wide one a few wide ranges.
    """
    import cdshealpix.nested as hp
    from astropy import units as u
    from astropy.coordinates import Latitude, Longitude

    lon, lat = Longitude(ra * u.deg), Latitude(dec * u.deg)
    # Start near the depth where a pixel is about the radius, then coarsen until few ranges remain.
    depth = int(np.clip(math.floor(math.log2(58.6 / max(radius, 1e-9))), 0, order))
    while True:
        ipix, depths, _ = hp.cone_search(lon, lat, radius * u.deg, depth=depth, flat=False)
        shift = 2 * (order - depths.astype(np.int64))
        lo = ipix.astype(np.int64) << shift
        hi = ((ipix.astype(np.int64) + 1) << shift) - 1
        idx = np.argsort(lo)
        lo, hi = lo[idx], hi[idx]
        # merge contiguous ranges
        breaks = np.flatnonzero(lo[1:] > hi[:-1] + 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks - 1, [len(lo) - 1]))
        ranges = list(zip(lo[starts].tolist(), hi[ends].tolist(), strict=True))
        if len(ranges) <= max_ranges or depth == 0:
            return ranges
        depth -= 1


def geo_point(ra: float, dec: float) -> dict[str, float]:
    """An Elasticsearch geo_point for a sky position: latitude = Dec, longitude = RA wrapped to ±180."""
    lon = ra - 360.0 if ra > 180.0 else ra
    return {"lat": dec, "lon": lon}
