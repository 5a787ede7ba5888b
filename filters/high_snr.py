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
        magerr = p.get("ant_magerr")
        if magerr is None or not magerr > 0:
            return
        snr = MAG_TO_SNR / magerr
        locus.set_property("newest_alert_snr", float(snr))
        if snr > THRESHOLDS.get(p.get("ant_passband"), 50.0):
            locus.tag("high_snr")
