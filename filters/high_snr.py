"""high_snr: the newest detection is measured at high signal-to-noise.

A port of ANTARES's ``HighSNR`` that also works for Rubin: the S/N comes from
the magnitude error (S/N = 2.5/ln 10 / σ_mag, the same relation for every
survey) and the thresholds are per passband. ANTARES chose its ZTF thresholds
(g 50, R 55) to flag the top ~3 % of alerts; Rubin bands default to 50.
"""

from __future__ import annotations

import math

from broker.filtering.contract import BaseFilter

#: 2.5 / ln(10): converts a magnitude error to 1/(S/N).
MAG_TO_SNR = 2.5 / math.log(10)

THRESHOLDS = {"g": 50.0, "R": 55.0, "i": 50.0, "u": 50.0, "r": 55.0, "z": 50.0, "y": 50.0}

#: the smallest magnitude error taken as a measurement (S/N 10^6): below it, no instrument measured it.
#: A packet claiming ``sigmapsf = 1e-40`` is wrong, not brilliant: no S/N is reported for it.
MIN_MAGERR = 1e-6


def _finite(x) -> float | None:
    """``x`` as a finite float, or None (strings, NaN, inf, absurd types: no measurement)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class HighSNR(BaseFilter):
    REQUIRED_ALERT_PROPERTIES = ["ant_mag", "ant_magerr", "ant_passband"]
    OUTPUT_LOCUS_TAGS = [{"name": "high_snr", "description": "The newest detection has a high signal-to-noise ratio."}]
    OUTPUT_LOCUS_PROPERTIES = [
        {"name": "newest_alert_snr", "type": "float", "description": "S/N of the newest detection."}
    ]

    def _run(self, locus) -> None:
        p = locus.alert.properties
        if p["ant_survey"] == 2:  # an upper limit has no measurement
            return
        magerr = _finite(p.get("ant_magerr"))
        if magerr is None or magerr < MIN_MAGERR:
            return  # no (plausible) measurement: nothing to say, and nothing to fail on
        snr = MAG_TO_SNR / magerr
        locus.set_property("newest_alert_snr", snr)
        band = p.get("ant_passband")
        if snr > THRESHOLDS.get(band if isinstance(band, str) else "", 50.0):
            locus.tag("high_snr")
