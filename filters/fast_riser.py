"""fast_riser: the source brightened by ≥ 0.5 mag/day, and by ≥ 0.5 mag, in the newest alert's band.

Young supernovae, kilonovae and flares rise fast; most variable stars and
artefacts do not. The rise is measured between the newest detection and every
earlier point in the same passband within the last ``WINDOW_DAYS`` days: other
detections (magnitude difference, significant at 3σ) and upper limits fainter
than the detection (a lower bound on the rise). Pairs less than ``MIN_DT_DAYS``
apart are ignored: within a night, photometric noise, not a rise. The steepest
significant rate is kept as the ``rise_rate_mag_per_day`` property; the light
curve is handled as numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from broker.filtering.contract import BaseFilter
from broker.locus import ES_FLOAT_MAX

WINDOW_DAYS = 10.0
MIN_DT_DAYS = 0.3
MIN_RISE_MAG = 0.5
MIN_SIGMA = 3.0
THRESHOLD_MAG_PER_DAY = 0.5


def _number(x) -> float:
    """``x`` as a finite float, NaN for anything else (missing, a string, inf): NaN never passes a cut."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    x = float(x)
    return x if math.isfinite(x) else math.nan


def _brighter_than_template(p: dict) -> bool:
    """ZTF reports |difference flux|: a negative difference (``isdiffpos`` f/0) is a fading, not a source."""
    flag = p.get("ztf_isdiffpos")
    if flag is None:
        flux = p.get("lsst_psfFlux", 1.0)
        return flux is None or _number(flux) > 0
    return str(flag) in ("t", "1")


class FastRiser(BaseFilter):
    REQUIRED_ALERT_PROPERTIES = ["ant_mag", "ant_passband"]
    OUTPUT_LOCUS_TAGS = [{"name": "fast_riser", "description": "Brightened by at least 0.5 mag/day."}]
    OUTPUT_LOCUS_PROPERTIES = [
        {"name": "rise_rate_mag_per_day", "type": "float", "description": "Steepest recent rise (mag/day)."}
    ]

    def _run(self, locus) -> None:
        newest = locus.alert.properties
        if newest["ant_survey"] == 2 or newest.get("ant_mag") is None or not _brighter_than_template(newest):
            return
        band, t0, m0 = newest["ant_passband"], _number(newest.get("ant_mjd")), _number(newest["ant_mag"])
        alerts = [a.properties for a in locus.alerts[:-1]]
        if not alerts or math.isnan(t0) or math.isnan(m0):
            return
        same = np.array([a.get("ant_passband") == band and _brighter_than_template(a) for a in alerts])
        mjd = np.array([_number(a.get("ant_mjd")) for a in alerts], dtype=float)
        mag = np.array([_number(a.get("ant_mag")) for a in alerts], dtype=float)
        lim = np.array([_number(a.get("ant_maglim")) for a in alerts], dtype=float)
        err = np.nan_to_num(np.array([_number(a.get("ant_magerr")) for a in alerts], dtype=float), nan=0.0)
        e0 = np.nan_to_num(_number(newest.get("ant_magerr")), nan=0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            dt = t0 - mjd
            usable = same & (dt >= MIN_DT_DAYS) & (dt <= WINDOW_DAYS)
        if not usable.any():
            return
        # A detection gives its magnitude; an upper limit gives its limit (the source was fainter).
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            before = np.where(np.isfinite(mag), mag, lim)
            rise = before - m0
            # a detection pair must differ significantly; an upper limit has no error to add
            sigma = np.sqrt(np.where(np.isfinite(mag), err, 0.0) ** 2 + e0**2)
            significant = (rise >= MIN_RISE_MAG) & (rise >= MIN_SIGMA * sigma)
            rate = rise / dt
        rate = rate[usable & np.isfinite(before) & significant & np.isfinite(rate)]
        if rate.size == 0:
            return
        best = float(rate.max())
        if not abs(best) <= ES_FLOAT_MAX:
            return  # magnitudes no sky has (1e300): nothing to report
        locus.set_property("rise_rate_mag_per_day", best)
        if best >= THRESHOLD_MAG_PER_DAY:
            locus.tag("fast_riser")
