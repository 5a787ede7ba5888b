"""Light-curve data for the locus page's chart: columns per passband, aligned on one time axis.

uPlot wants one shared x array and, per series, a y array with nulls where a series has no point.
Detections carry their error (drawn as bars by ``static/locus.js``); non-detections become upper
limits (the alert's limiting magnitude). Built with numpy over the alert columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from broker.alert import Alert

#: passband → colour (ZTF g/r/i and LSST ugrizy).
COLOURS = {"g": "#2ca02c", "r": "#d62728", "i": "#9467bd", "u": "#1f77b4", "z": "#8c564b", "y": "#e377c2",
           "R": "#d62728", "V": "#17becf"}


def chart_data(alerts: list[Alert]) -> dict[str, Any]:
    if not alerts:
        return {"x": [], "series": []}
    mjd = np.array([a.mjd for a in alerts], dtype=float)
    mag = np.array([np.nan if a.mag is None else a.mag for a in alerts], dtype=float)
    err = np.array([np.nan if a.magerr is None else a.magerr for a in alerts], dtype=float)
    lim = np.array([np.nan if a.maglim is None else a.maglim for a in alerts], dtype=float)
    band = np.array([a.passband or "?" for a in alerts])
    ok = np.isfinite(mjd)
    x, inv = np.unique(mjd[ok], return_inverse=True)
    mag, err, lim, band = mag[ok], err[ok], lim[ok], band[ok]
    series = []
    for b in sorted(set(band.tolist())):
        sel = band == b
        det = sel & np.isfinite(mag)
        ul = sel & ~np.isfinite(mag) & np.isfinite(lim)
        for kind, mask, values in (("detection", det, mag), ("upper_limit", ul, lim)):
            if not mask.any():
                continue
            y = np.full(x.shape, np.nan)
            e = np.full(x.shape, np.nan)
            y[inv[mask]] = values[mask]
            if kind == "detection":
                e[inv[mask]] = err[mask]
            series.append({"band": b, "kind": kind, "colour": COLOURS.get(b, "#444444"),
                           "y": _nulls(y), "err": _nulls(e), "n": int(mask.sum())})
    return {"x": x.tolist(), "series": series}


def _nulls(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in a]
