"""The canonical alert: one survey measurement, whatever survey it came from.

Every survey packet is normalised into one *triggering* alert plus zero or more
*history* alerts (previous detections, upper limits, forced photometry). The
canonical fields follow ANTARES (``ant_*``) so that filters written for ANTARES
read them unchanged; every original survey field is kept, prefixed with the
survey name (``ztf_*``, ``lsst_*``), in :attr:`Alert.properties`.

Survey normalisers live in :mod:`broker.ingest.surveys`; this module only holds the
shape they produce so that every later stage depends on one small type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: ``ant_survey`` codes, as ANTARES numbers them.
SURVEY_ZTF_DETECTION = 1
SURVEY_ZTF_UPPER_LIMIT = 2
SURVEY_LSST = 4

SURVEY_NAMES = {
    SURVEY_ZTF_DETECTION: "ztf",
    SURVEY_ZTF_UPPER_LIMIT: "ztf",
    SURVEY_LSST: "lsst",
}


@dataclass(slots=True)
class Alert:
    """One measurement (detection, upper limit or forced point) of one place.

    ``ra``/``dec`` may be NaN for measurements that carry no position of their
    own (ZTF upper limits); association then uses the packet's position.
    """

    alert_id: str
    survey: int
    mjd: float
    ra: float
    dec: float
    passband: str
    mag: float | None
    magerr: float | None
    maglim: float | None
    properties: dict[str, Any] = field(default_factory=dict)
    #: survey object id (ZTF ``objectId``, LSST ``diaObjectId``) when known.
    object_id: str | None = None
    #: True for measurements taken from a packet's history, not its trigger.
    is_history: bool = False
    #: id of the locus this alert joined, filled in by association.
    locus_id: str | None = None
    #: GW events whose credible region contains this alert (devkit shape:
    #: ``gracedb_id``, ``contour_level``, ``contour_area``).
    grav_wave_events: list[dict[str, Any]] = field(default_factory=list)
    #: neutrino events whose credible region contains this alert (same shape, ``event_id``
    #: instead of ``gracedb_id``); filled by the multi-messenger stage.
    neutrino_events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # ANTARES keeps the canonical values inside ``properties`` too, and filters
        # read them there (``alert.properties["ant_mag"]``): keep both views equal.
        self.properties.update(
            ant_mjd=self.mjd,
            ant_ra=self.ra,
            ant_dec=self.dec,
            ant_passband=self.passband,
            ant_mag=self.mag,
            ant_magerr=self.magerr,
            ant_maglim=self.maglim,
            ant_survey=self.survey,
        )
        for key in ("ant_mag", "ant_magerr", "ant_maglim", "ant_ra", "ant_dec"):
            v = self.properties[key]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                del self.properties[key]  # ANTARES omits what a measurement lacks

    @property
    def id(self) -> str:
        """The devkit's name for :attr:`alert_id`."""
        return self.alert_id

    @property
    def survey_name(self) -> str:
        return SURVEY_NAMES.get(self.survey, "unknown")

    @property
    def is_detection(self) -> bool:
        return self.mag is not None and not (isinstance(self.mag, float) and math.isnan(self.mag))


@dataclass(slots=True)
class Packet:
    """A decoded, normalised survey packet: the trigger plus its history.

    ``cutouts`` maps a stamp name (``science``, ``template``, ``difference``)
    to its raw (possibly gzipped) FITS bytes; the store keeps them apart from
    the alert rows so that light-curve reads stay small.
    """

    trigger: Alert
    history: list[Alert] = field(default_factory=list)
    schema: str = ""
    cutouts: dict[str, bytes] = field(default_factory=dict)

    @property
    def alerts(self) -> list[Alert]:
        return [self.trigger, *self.history]
