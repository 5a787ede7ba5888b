"""A scan's map as it refines: 2·Δllh over the whole sky and around the best fit, with the contours.

The map is skyreader's own (``extract_map``: each nside's pixels painted onto the finest nside
scanned, finer steps over coarser ones); the contour lines are those the scan server computed with
skyreader's functions (``summary.levels``). Drawn with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from broker.multimessenger.scans.model import ScanEvent


def render(event: ScanEvent, pixels: dict[int, np.ndarray], summary: dict[str, Any], title: str) -> bytes:
    import healpy
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from skyreader.utils.handle_map_data import extract_map

    from broker.multimessenger.scans.result import skyscan_result

    result = skyscan_result(event, pixels)
    _, grid_ra, grid_dec, eq_map, _ = extract_map(result, True, None)
    nside = healpy.get_nside(eq_map)
    best_ra, best_dec = float(np.degrees(grid_ra[0])), float(np.degrees(grid_dec[0]))
    fig = Figure(figsize=(10, 4.2), dpi=100)
    ax1 = fig.add_subplot(1, 2, 1, projection="mollweide")
    lon = np.linspace(-np.pi, np.pi, 360)
    lat = np.linspace(-np.pi / 2, np.pi / 2, 180)
    lo, la = np.meshgrid(lon, lat)
    vals = eq_map[healpy.ang2pix(nside, np.pi / 2 - la, np.mod(-lo, 2 * np.pi))]  # RA grows to the left
    mesh = ax1.pcolormesh(lon, lat, np.clip(vals, 0, 200), cmap="plasma_r", shading="auto", rasterized=True)
    ax1.plot([-np.radians(_wrap(best_ra))], [np.radians(best_dec)], "c+", ms=10)
    ax1.set_xticklabels([])
    ax1.grid(True, alpha=0.4)
    ax1.set_title(f"{title}: 2ΔLLH, whole sky (nsides {', '.join(map(str, sorted(pixels)))})", fontsize=9)
    fig.colorbar(mesh, ax=ax1, orientation="horizontal", shrink=0.6, pad=0.05)
    ax2 = fig.add_subplot(1, 2, 2)
    half = 6.0
    levels = summary.get("levels") or {}
    lines90 = (levels.get("90") or {}).get("lines") or []
    if lines90:
        pts = np.array([p for line in lines90 for p in line])
        dra = (pts[:, 0] - best_ra + 180) % 360 - 180
        half = float(min(20.0, max(1.0, 1.6 * max(np.abs(dra).max() * np.cos(np.radians(best_dec)),
                                                  np.abs(pts[:, 1] - best_dec).max()))))
    cosd = max(np.cos(np.radians(best_dec)), 0.05)
    x = np.linspace(-half, half, 300)
    y = np.linspace(-half, half, 300)
    xx, yy = np.meshgrid(x, y)
    dec = np.clip(best_dec + yy, -90, 90)
    ra = np.mod(best_ra + xx / cosd, 360)
    zoom = eq_map[healpy.ang2pix(nside, np.radians(90 - dec), np.radians(ra))]
    m2 = ax2.pcolormesh(-x, y, np.clip(zoom, 0, 40), cmap="plasma_r", shading="auto", vmin=0, vmax=40)
    for name, color in (("50", "k"), ("90", "r")):
        for line in (levels.get(name) or {}).get("lines") or []:
            p = np.array(line)
            if len(p) > 1:
                ax2.plot(-((p[:, 0] - best_ra + 180) % 360 - 180) * cosd, p[:, 1] - best_dec, color=color, lw=1.2,
                         label=f"{name}% ({(levels[name].get('area_deg2') or 0):.2f} deg²)")
    ax2.plot([0], [0], "c+", ms=12)
    ax2.set_xlabel(f"ΔRA·cos δ (deg) around RA {best_ra:.3f}")
    ax2.set_ylabel(f"ΔDec (deg) around Dec {best_dec:.3f}")
    handles, labels = ax2.get_legend_handles_labels()
    if handles:
        seen = dict(zip(labels, handles, strict=True))
        ax2.legend(seen.values(), seen.keys(), fontsize=8, loc="lower left")
    ax2.set_title("best fit and contours (2ΔLLH 1.39, 4.61)", fontsize=9)
    fig.colorbar(m2, ax=ax2, shrink=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _wrap(ra: float) -> float:
    return (ra + 180) % 360 - 180
