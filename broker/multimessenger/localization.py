"""Localizations: where an event is, as credible regions and per-position containment.

Every shape answers the same two questions:

* :meth:`Localization.containment` — for many positions at once, the smallest credible level
  (percent) whose region contains each one, and that region's area (deg²): ANTARES's
  ``contour_level`` and ``contour_area``, ligo.skymap's ``searched_prob`` and ``searched_area``;
* :meth:`Localization.area` and :meth:`Localization.moc` — the region at a given level (50 %, 90 %,
  any), its area, and its MOC (mocpy), which the index uses to find stored loci inside it and the
  portal draws.

Shapes:

* :class:`MultiOrderMap` — a HEALPix map (LVK multi-order, or a flat map converted). The greedy
  credible levels are the cumulative probability of the pixels sorted by density, exactly what
  ``ligo.skymap.postprocess.crossmatch`` computes; but the sort happens once per map (when it is
  built) and every batch of positions is then one pixel look-up (cdshealpix) and one binary
  search, instead of a sort per call. ``bench/bench_multimessenger.py`` measures the difference.
* :class:`Circle` — a radius at a containment probability: a von Mises–Fisher distribution on the
  sphere (the spherical Gaussian), whose cumulative probability within angle θ is
  ``(1 - exp(-κ(1 - cos θ))) / (1 - exp(-2κ))``; κ is solved so that the given radius holds the
  given probability. Exact on the sphere, and the 2-D Gaussian of small error circles.
* :class:`Ellipse` — semi-axes at a containment probability, as a 2-D Gaussian in the tangent
  plane (gnomonic offsets): level = ``1 - (1 - p)^(d²)`` with d the Mahalanobis radius in units of
  the given ellipse. A small-angle model, like the error ellipses it describes.
* :class:`Union` — several circles (one per coincident neutrino): a position's level is the
  smallest any of them gives.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np

from broker.multimessenger.notice import LocalizationSpec, NoticeError

SR_TO_DEG2 = (180.0 / math.pi) ** 2
FULL_SKY_DEG2 = 4 * math.pi * SR_TO_DEG2
#: MOC depth used for circles and ellipses (order 14: ~13″ cells).
SHAPE_MOC_DEPTH = 14


def _pixels(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    import cdshealpix.nested as hp
    from astropy import units as u

    return hp.lonlat_to_healpix(np.asarray(ra, dtype=float) * u.deg, np.asarray(dec, dtype=float) * u.deg,
                                order).astype(np.int64)


def angular_distance_deg(ra1: Any, dec1: Any, ra2: float, dec2: float) -> np.ndarray:
    """Great-circle distance (haversine, stable at small angles), degrees."""
    r1, d1, r2, d2 = map(np.radians, (np.asarray(ra1, float), np.asarray(dec1, float), ra2, dec2))
    s = np.sin((d1 - d2) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r1 - r2) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


class Localization(abc.ABC):
    """A credible-region model of one event's position."""

    #: a representative position (the map's densest pixel, the circle's centre).
    center: tuple[float, float]

    @abc.abstractmethod
    def containment(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """(level %, area deg²) of the smallest credible region containing each position.

        Positions outside the map's support get level 100 and the map's whole area.
        Non-finite positions get NaN.
        """

    @abc.abstractmethod
    def area(self, level: float) -> float:
        """Area (deg²) of the smallest region holding ``level`` percent of the probability."""

    @abc.abstractmethod
    def moc(self, level: float):
        """The credible region at ``level`` percent as a :class:`mocpy.MOC`."""

    def summary(self, levels: tuple[float, ...] = (50.0, 90.0)) -> dict[str, Any]:
        return {"shape": type(self).__name__.lower(), "center": list(self.center),
                "areas": {f"{lv:g}": self.area(lv) for lv in levels}}


def _finite_mask(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.isfinite(ra) & np.isfinite(dec) & (dec >= -90.0) & (dec <= 90.0)


class MultiOrderMap(Localization):
    """A multi-order HEALPix probability map, indexed once for fast containment."""

    def __init__(self, uniq: np.ndarray, probdensity: np.ndarray):
        import astropy_healpix as ah

        uniq = np.asarray(uniq, dtype=np.int64)
        density = np.asarray(probdensity, dtype=np.float64)
        order, ipix = ah.uniq_to_level_ipix(uniq)
        order = np.asarray(order, dtype=np.int64)
        ipix = np.asarray(ipix, dtype=np.int64)
        self.max_order = int(order.max())
        area_sr = 4 * math.pi / (12 * 4.0 ** order)
        prob = density * area_sr
        total = prob.sum()
        if not total > 0:
            raise NoticeError("bad_skymap", "sky map holds no probability")
        prob = prob / total
        # the greedy order: densest pixels first; ties (flat plateaus, zeros) broken by descending UNIQ, as
        # ligo.skymap's crossmatch breaks them (its structured sort by PROBDENSITY, then UNIQ, reversed)
        rank = np.lexsort((-uniq, -density))
        self.cumprob = np.cumsum(prob[rank])
        self.cumarea = np.cumsum(area_sr[rank]) * SR_TO_DEG2
        self.cumprob[-1] = max(self.cumprob[-1], 1.0)
        level_of = np.empty(uniq.size)
        area_of = np.empty(uniq.size)
        level_of[rank] = self.cumprob * 100.0
        area_of[rank] = self.cumarea
        shift = 2 * (self.max_order - order)
        lo = ipix << shift
        hi = (ipix + 1) << shift
        srt = np.argsort(lo, kind="stable")
        self._lo, self._hi = lo[srt], hi[srt]
        self._level, self._area = level_of[srt], area_of[srt]
        self._density_sorted = density[srt]
        self._rank = rank
        self._order, self._ipix, self.uniq, self.density = order, ipix, uniq, density
        self.total_area = float(self.cumarea[-1])
        best = rank[0]
        nside = 2 ** int(order[best])
        lon, lat = ah.healpix_to_lonlat(int(ipix[best]), nside, order="nested")
        self.center = (float(lon.deg), float(lat.deg))

    @classmethod
    def from_fits_bytes(cls, data: bytes) -> MultiOrderMap:
        from broker.multimessenger.skymaps import read_skymap

        uniq, density, _ = read_skymap(data)
        return cls(uniq, density)

    @property
    def n_pixels(self) -> int:
        return int(self.uniq.size)

    def containment(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        level = np.full(ra.shape, np.nan)
        area = np.full(ra.shape, np.nan)
        ok = _finite_mask(ra, dec)
        if not ok.any():
            return level, area
        p = _pixels(ra[ok] % 360.0, dec[ok], self.max_order)
        i = np.searchsorted(self._lo, p, side="right") - 1
        ic = np.clip(i, 0, None)
        inside = (i >= 0) & (p < self._hi[ic])
        level[ok] = np.where(inside, self._level[ic], 100.0)
        area[ok] = np.where(inside, self._area[ic], self.total_area)
        return level, area

    def density_at(self, ra: Any, dec: Any) -> np.ndarray:
        """Probability density (per sr) at each position (0 outside the map, NaN for bad positions)."""
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        out = np.full(ra.shape, np.nan)
        ok = _finite_mask(ra, dec)
        if ok.any():
            p = _pixels(ra[ok] % 360.0, dec[ok], self.max_order)
            i = np.searchsorted(self._lo, p, side="right") - 1
            ic = np.clip(i, 0, None)
            inside = (i >= 0) & (p < self._hi[ic])
            out[ok] = np.where(inside, self._density_sorted[ic], 0.0)
        return out

    def area(self, level: float) -> float:
        """Interpolated between pixels, as ligo.skymap's ``contour_areas`` are."""
        return float(np.interp(level / 100.0, self.cumprob, self.cumarea, right=self.total_area))

    def region_cells(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(order, ipix) of the pixels making up the ``level`` % credible region (densest first)."""
        n = int(np.searchsorted(self.cumprob, level / 100.0, side="left")) + 1
        idx = self._rank[: min(n, self._rank.size)]
        return self._order[idx], self._ipix[idx]

    def moc(self, level: float):
        from mocpy import MOC

        order, ipix = self.region_cells(level)
        return MOC.from_healpix_cells(ipix.astype(np.uint64), order.astype(np.uint8), max_depth=self.max_order)


class Circle(Localization):
    """A von Mises–Fisher distribution: ``radius`` deg holds ``containment`` of the probability."""

    def __init__(self, ra: float, dec: float, radius: float, containment: float = 0.9):
        if not (math.isfinite(radius) and 0 < radius <= 180 and 0 < containment < 1):
            raise NoticeError("implausible_localization", f"circle of radius {radius} at {containment}")
        self.center = (float(ra) % 360.0, float(dec))
        self.radius, self.p = float(radius), float(containment)
        self.kappa = self._solve_kappa(math.radians(self.radius), self.p)
        self._norm = -math.expm1(-2 * self.kappa)

    @staticmethod
    def _solve_kappa(r: float, p: float) -> float:
        """κ with P(θ < r) = p; the small-angle value is exact to ~e^{-2κ}, so refine a few times."""
        one_minus_cos = 2 * math.sin(r / 2) ** 2
        kappa = -math.log1p(-p) / one_minus_cos
        for _ in range(50):
            new = -math.log1p(-p * -math.expm1(-2 * kappa)) / one_minus_cos
            if abs(new - kappa) <= 1e-12 * kappa:
                break
            kappa = new
        return max(kappa, 1e-9)

    def _level_of_angle(self, theta_rad: np.ndarray) -> np.ndarray:
        one_minus_cos = 2 * np.sin(theta_rad / 2) ** 2
        return -np.expm1(-self.kappa * one_minus_cos) / self._norm

    def _angle_of_level(self, frac: float) -> float:
        frac = min(max(frac, 0.0), 1.0)
        one_minus_cos = -math.log1p(-frac * self._norm) / self.kappa
        return 2 * math.asin(min(1.0, math.sqrt(max(one_minus_cos, 0.0) / 2)))

    def containment(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        theta = np.radians(angular_distance_deg(ra, dec, *self.center))
        frac = self._level_of_angle(theta)
        area = 2 * np.pi * (2 * np.sin(theta / 2) ** 2) * SR_TO_DEG2
        bad = ~_finite_mask(ra, dec)
        return np.where(bad, np.nan, frac * 100.0), np.where(bad, np.nan, area)

    def radius_at(self, level: float) -> float:
        return math.degrees(self._angle_of_level(level / 100.0))

    def area(self, level: float) -> float:
        theta = self._angle_of_level(level / 100.0)
        return 2 * math.pi * (2 * math.sin(theta / 2) ** 2) * SR_TO_DEG2

    def moc(self, level: float):
        from astropy import units as u
        from mocpy import MOC

        return MOC.from_cone(lon=self.center[0] * u.deg, lat=self.center[1] * u.deg,
                             radius=self.radius_at(level) * u.deg, max_depth=SHAPE_MOC_DEPTH)


class Ellipse(Localization):
    """A 2-D Gaussian in the tangent plane whose ``(a, b, pa)`` ellipse holds ``containment``."""

    def __init__(self, ra: float, dec: float, a: float, b: float, pa: float = 0.0, containment: float = 0.9):
        if not (0 < b <= a <= 90 and 0 < containment < 1):
            raise NoticeError("implausible_localization", f"ellipse {a}×{b} deg at {containment}")
        self.center = (float(ra) % 360.0, float(dec))
        self.a, self.b, self.pa, self.p = float(a), float(b), float(pa), float(containment)
        self._log1mp = math.log1p(-self.p)

    def _d2(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        r0, d0 = map(math.radians, self.center)
        r, d = np.radians(ra), np.radians(dec)
        cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.cos(d) * np.sin(r - r0) / cosc  # east
            eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cosc  # north
        pa = math.radians(self.pa)
        u = np.degrees(xi * math.sin(pa) + eta * math.cos(pa))  # along the major axis
        v = np.degrees(xi * math.cos(pa) - eta * math.sin(pa))
        d2 = (u / self.a) ** 2 + (v / self.b) ** 2
        return np.where(cosc > 0, d2, np.inf)  # the far hemisphere is outside every level

    def containment(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        d2 = self._d2(ra, dec)
        frac = -np.expm1(d2 * self._log1mp)
        area = math.pi * self.a * self.b * d2
        bad = ~_finite_mask(ra, dec)
        return np.where(bad, np.nan, frac * 100.0), np.where(bad, np.nan, np.minimum(area, FULL_SKY_DEG2))

    def _scale(self, level: float) -> float:
        frac = min(max(level / 100.0, 0.0), 1.0 - 1e-15)
        return math.sqrt(math.log1p(-frac) / self._log1mp)

    def area(self, level: float) -> float:
        s = self._scale(level)
        return min(math.pi * self.a * self.b * s * s, FULL_SKY_DEG2)

    def moc(self, level: float):
        from astropy import units as u
        from astropy.coordinates import Angle
        from mocpy import MOC

        s = self._scale(level)
        return MOC.from_elliptical_cone(lon=self.center[0] * u.deg, lat=self.center[1] * u.deg,
                                        a=Angle(self.a * s, u.deg), b=Angle(self.b * s, u.deg),
                                        pa=Angle(self.pa, u.deg), max_depth=SHAPE_MOC_DEPTH)


class Union(Localization):
    """Several localizations of one event (an LVK track search's neutrinos): the smallest level wins."""

    def __init__(self, parts: list[Localization]):
        if not parts:
            raise NoticeError("implausible_localization", "a union of no localizations")
        self.parts = parts
        self.center = parts[0].center

    def containment(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        results = [p.containment(ra, dec) for p in self.parts]
        levels = np.vstack([r[0] for r in results])
        areas = np.vstack([r[1] for r in results])
        filled = np.where(np.isnan(levels), np.inf, levels)
        best = np.argmin(filled, axis=0)
        cols = np.arange(levels.shape[1])
        return levels[best, cols], areas[best, cols]

    def area(self, level: float) -> float:
        return float(sum(p.area(level) for p in self.parts))

    def moc(self, level: float):
        out = self.parts[0].moc(level)
        for p in self.parts[1:]:
            out = out.union(p.moc(level))
        return out


def build(spec: LocalizationSpec, skymap: bytes | None = None) -> Localization:
    """The localization a notice's spec (and its sky map's bytes, when it has one) describes."""
    if skymap is not None:
        return MultiOrderMap.from_fits_bytes(skymap)
    if spec.shape == "circles":
        return Union([build(c) for c in spec.components])
    if spec.ra is None or spec.dec is None:
        raise NoticeError("no_localization", f"{spec.shape} localization without a position or map")
    if spec.shape == "ellipse" or (spec.a is not None and spec.b is not None and spec.radius is None):
        return Ellipse(spec.ra, spec.dec, spec.a, spec.b, spec.pa, spec.containment)
    if spec.radius is not None:
        return Circle(spec.ra, spec.dec, spec.radius, spec.containment)
    raise NoticeError("no_localization", f"{spec.shape} localization without an error radius or map")


def region_ranges(moc, max_ranges: int) -> tuple[int, np.ndarray]:
    """(depth, [lo, hi) nested ranges at that depth) covering ``moc``, coarsened to ≤ ``max_ranges`` ranges.

    A coarser MOC is a superset (every cell that touches the region), so an index query with it
    misses nothing; the exact containment decides afterwards.
    """
    depth = int(moc.max_order)
    while True:
        ranges = np.asarray(moc.to_depth29_ranges, dtype=np.uint64)
        if len(ranges) <= max_ranges or depth == 0:
            shift = np.uint64(2 * (29 - depth))
            return depth, np.stack([ranges[:, 0] >> shift, ranges[:, 1] >> shift], axis=1).astype(np.int64)
        depth -= 1
        moc = moc.degrade_to_order(depth)
