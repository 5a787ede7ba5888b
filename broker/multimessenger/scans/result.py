"""A scan's result exactly as ``icecube-skyreader`` writes it, and its contours from skyreader's functions.

:func:`skyscan_result` builds skyreader's own :class:`skyreader.SkyScanResult` (structured arrays of
data version 0: ``index, llh, E_in, E_tot``, RING pixels, with the event metadata ``run_id, event_id,
mjd, event_type, nside, is_real_event, version`` on each nside's dtype). :func:`serialize` is its
``SkyScanResult.serialize()`` layout — ``{"nside-8": {"columns": [...], "data": [[...], ...],
"metadata": {...}}, ...}``, NaN as skyreader's sentinel string — written here because skyreader's
own ``serialize`` calls ``DataFrame.applymap``, which pandas 3 removed; ``tests/unit/test_scans.py``
checks that the two agree byte for byte (with ``applymap`` restored for the comparison) and that
``SkyScanResult.deserialize`` reads ours back equal.

:func:`contours` follows skyreader's ``SkyScanPlotter.create_plot_zoomed`` step by step, with its
own functions: ``extract_map`` (2·Δllh per scanned pixel), ``get_contour_levels`` (Wilks: 1.39 and
4.61), ``meander.spherical_contours`` over the scanned pixel centres, ``get_contour_areas``
(Gauss–Green on the sphere) — without writing its PDF/FITS files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from broker.multimessenger.scans.model import ScanEvent

#: skyreader's data version 0 columns.
COLUMNS = ["index", "llh", "E_in", "E_tot"]


def metadata(event: ScanEvent, nside: int) -> dict[str, Any]:
    return {"nside": int(nside), "run_id": int(event.run_id), "event_id": int(event.event_id),
            "mjd": float(event.mjd), "event_type": event.event_type, "is_real_event": bool(event.is_real_event),
            "version": 0}


def skyscan_result(event: ScanEvent, pixels: dict[int, np.ndarray]) -> Any:
    """skyreader's ``SkyScanResult`` over the stored ``(n, 4)`` rows per nside (steps with no row left out)."""
    from skyreader import SkyScanResult

    result = {}
    for nside in sorted(pixels):
        rows = np.asarray(pixels[nside], dtype=float).reshape(-1, 4)
        if not len(rows):
            continue
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        dtype = np.dtype(SkyScanResult.PIXEL_TYPES[0], metadata=metadata(event, nside))
        arr = np.zeros(len(rows), dtype=dtype)
        arr["index"] = rows[:, 0].astype(np.int64)
        for j, c in enumerate(COLUMNS[1:], start=1):
            arr[c] = rows[:, j]
        result[SkyScanResult.format_nside(nside)] = arr
    return SkyScanResult(result)


def serialize(result: Any) -> dict[str, Any]:
    """``SkyScanResult.serialize()``'s exact layout and types (see the module docstring for why here)."""
    from skyreader.result import NAN_SENTINEL

    def cell(v: Any) -> Any:
        v = v.item() if isinstance(v, np.generic) else v
        return NAN_SENTINEL if isinstance(v, float) and v != v else v

    out: dict[str, Any] = {}
    for key, arr in result.result.items():
        columns = list(arr.dtype.names or ())
        data = [[cell(row[c]) for c in columns] for row in arr]
        meta = {k: cell(v) for k, v in (arr.dtype.metadata or {}).items()}
        out[key] = {"columns": columns, "data": data, "metadata": meta}
    return out


def contours(result: Any, max_points: int = 400) -> dict[str, Any]:
    """Best fit, 50 %/90 % contour areas (deg²) and the contour lines (RA, Dec deg), by skyreader's functions.

    ``max_points`` thins each line for pages and JSON (areas are computed on the full lines).
    """
    import copy

    import meander
    from skyreader.utils.areas import get_contour_areas
    from skyreader.utils.handle_map_data import extract_map, get_contour_levels

    grid_value, grid_ra, grid_dec, equatorial_map, _ = extract_map(result, True, None)
    levels, labels, _ = get_contour_levels(equatorial_map, True, False)
    values = copy.copy(grid_value)
    values[np.isnan(values)] = np.nanmax(equatorial_map)
    sample_points = np.array([np.pi / 2 - grid_dec, grid_ra]).T
    by_level = meander.spherical_contours(sample_points, values, levels)
    min_ra, min_dec = float(grid_ra[0]), float(grid_dec[0])
    areas = get_contour_areas(by_level, min_ra)
    best = result.best_fit
    meta = best.dtype.metadata or {}
    out: dict[str, Any] = {"best": {"ra": float(np.degrees(min_ra)) % 360.0, "dec": float(np.degrees(min_dec)),
                                    "nside": int(meta.get("nside", 0)), "pixel": int(best["index"]),
                                    "llh": float(best["llh"])},
                           "levels": {}}
    for name, level, area, lines in zip(("50", "90", "3sigma"), levels, areas, by_level, strict=False):
        thin = []
        for line in lines:
            step = max(1, len(line) // max_points)
            pts = line[::step]
            thin.append([[round(float(np.degrees(p[1])) % 360.0, 5), round(90.0 - float(np.degrees(p[0])), 5)]
                         for p in pts])
        out["levels"][name] = {"two_delta_llh": float(level), "area_deg2": float(area), "lines": thin}
    return out
