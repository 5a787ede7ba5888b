"""The event page's static sky map: the credible regions drawn with ligo.skymap's projections.

Two panels: the whole sky (``astro hours mollweide``) and a zoom on the 90 % region (``astro
degrees zoom``). The image is the map's probability density (or, for a circle or ellipse, its
credible level); the 50 % and 90 % contours are drawn from our containment evaluated on the
panel's own pixel grid (exact for every shape, whatever its size); coincident loci are marked.
Rendering takes a second or two, so pages cache the PNG per (event, localization, loci).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

_LOCK = threading.Lock()  # matplotlib's state is global: one render at a time
_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_CACHE_MAX = 32


def _grid(ax, loc, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, level, density) on an n-wide grid of the axes' WCS pixels (NaN off the projection)."""
    w, h = ax.wcs.pixel_shape
    xx, yy = np.meshgrid(np.linspace(-0.5, w - 0.5, n), np.linspace(-0.5, h - 0.5, max(2, int(n * h / w))))
    with np.errstate(all="ignore"):
        ra, dec = (np.asarray(v, dtype=float) for v in ax.wcs.pixel_to_world_values(xx, yy))
    level, _ = loc.containment(ra.ravel(), dec.ravel())
    if hasattr(loc, "density_at"):
        dens = loc.density_at(ra.ravel(), dec.ravel())
    else:  # circles and ellipses: the density falls linearly with the level
        dens = np.clip(1.0 - level / 100.0, 0, None)
    return xx, yy, level.reshape(ra.shape), dens.reshape(ra.shape)


def render(loc, points: list[tuple[float, float, bool]], title: str, levels: tuple[float, ...] = (50.0, 90.0),
           cache_key: tuple | None = None) -> bytes:
    """PNG bytes: ``loc``'s regions at ``levels``, ``points`` (ra, dec, inside) marked."""
    if cache_key is not None and cache_key in _CACHE:
        return _CACHE[cache_key]
    with _LOCK:
        png = _render(loc, points, title, levels)
    if cache_key is not None:
        _CACHE[cache_key] = png
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return png


def _render(loc, points, title: str, levels: tuple[float, ...]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import ligo.skymap.plot  # noqa: F401 - registers the "astro ..." projections
    from matplotlib import pyplot as plt

    area90 = loc.area(90.0)
    radius = float(np.clip(2.2 * math.sqrt(max(area90, 1e-4) / math.pi), 0.3, 60.0))
    fig = plt.figure(figsize=(10, 4.4), dpi=100)
    try:
        full = fig.add_axes([0.02, 0.1, 0.56, 0.8], projection="astro hours mollweide")
        zoom = fig.add_axes([0.67, 0.12, 0.31, 0.76], projection="astro degrees zoom",
                            center=f"{loc.center[0]}deg {loc.center[1]}deg", radius=f"{radius} deg")
        colors = {50.0: "#fca311", 90.0: "#e63946"}
        for ax, n in ((full, 360), (zoom, 240)):
            ax.grid(True, alpha=0.3)
            xs, ys, level, dens = _grid(ax, loc, n)
            ax.imshow(np.ma.masked_invalid(dens), origin="lower", cmap="cylon", interpolation="nearest",
                      extent=(xs.min(), xs.max(), ys.min(), ys.max()), aspect="auto")
            present = [lv for lv in levels if np.nanmin(level) < lv < np.nanmax(level)]
            if present:
                ax.contour(xs, ys, np.ma.masked_invalid(level), levels=sorted(present),
                           colors=[colors.get(lv, "w") for lv in sorted(present)], linewidths=1.2)
            for ra, dec, inside in points:
                ax.plot([ra], [dec], marker="x" if inside else ".", ms=7 if inside else 3,
                        color="#2ec4f1" if inside else "#cccccc", transform=ax.get_transform("world"))
        zoom.set_title(f"{radius:.2g}° around the densest point", fontsize=9)
        zoom.set_xlabel("RA")
        zoom.set_ylabel("Dec")
        fig.suptitle(f"{title} — 50% ({loc.area(50):.3g} deg², orange), 90% ({area90:.3g} deg², red); "
                     f"× coincident loci", fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def points_for(loci: list[Any], inside: set[str]) -> list[tuple[float, float, bool]]:
    return [(x["ra"], x["dec"], x["locus_id"] in inside) for x in loci]
