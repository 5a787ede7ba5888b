"""A locus: one place on the sky, its alerts, what is known there, and what filters said.

The :class:`Locus` object is also what filters receive. It honours the ANTARES
devkit's ``DevKitLocus`` contract (``locus.alert``, ``locus.alerts``,
``locus.properties``, ``locus.tags``, ``locus.tag()``, ``locus.set_property()``,
``locus.catalog_objects``, ``locus.timeseries()``, ``locus.lightcurve()``) so
that filters written for ANTARES run unmodified, but it builds the light curve
lazily, once per locus, and shares it between all filters.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.alert import SURVEY_LSST, SURVEY_ZTF_DETECTION, SURVEY_ZTF_UPPER_LIMIT, Alert

#: survey name → ``ant_survey`` codes, as the devkit defines them.
SURVEYS = {"ztf": [1, 2], "decat": [3], "lsst": [4], "all": [1, 2, 3, 4]}

#: Properties the broker computes; everything else in ``properties`` was set by filters.
INTERNAL_PROPERTIES = (
    "num_alerts",
    "num_mag_values",
    "brightest_alert_id",
    "brightest_alert_magnitude",
    "brightest_alert_observation_time",
    "newest_alert_id",
    "newest_alert_magnitude",
    "newest_alert_observation_time",
    "oldest_alert_id",
    "oldest_alert_magnitude",
    "oldest_alert_observation_time",
    "survey",
    "ztf_object_id",
    "ztf_ssnamenr",
    "lsst_dia_object_id",
)

ES_FLOAT_MAX = (2 - 2**-23) * 2**127

#: The columns ``antares_devkit.models.original_correct_mags`` reads.
_CORRECTION_INPUTS = frozenset({
    "ztf_fid", "ztf_field", "ztf_rcid", "ztf_distpsnr1", "ztf_distnr", "ztf_sgscore1", "ztf_magnr",
    "ztf_sigmagnr", "ztf_isdiffpos", "ztf_magpsf", "ztf_sigmapsf", "ztf_diffmaglim",
})

_B32 = "abcdefghijklmnopqrstuvwxyz234567"

#: fixed-point scale of the position sums: each unit-vector component is rounded to 2^-62 once,
#: per alert, so sums are exact integers and the mean does not depend on the order alerts arrive in.
_POS_SCALE = float(2**62)


def counts_for_position(a: Alert) -> bool:
    """Does ``a`` measure where the object is? Detections do; upper limits and forced photometry
    (measured *at* a position given to them) do not."""
    return (math.isfinite(a.ra) and math.isfinite(a.dec) and not a.properties.get("lsst_forced_phot")
            and not a.properties.get("ztf_forced_phot"))


def survey_object_key(a: Alert) -> str | None:
    """The survey object ``a`` was associated with by its survey (``ztf:<objectId>``,
    ``lsst:<diaObjectId>``), None when it has none; solar-system objects move, so they have none."""
    if a.object_id is None:
        return None
    if a.survey in (SURVEY_ZTF_DETECTION, SURVEY_ZTF_UPPER_LIMIT):
        return f"ztf:{a.object_id}"
    if a.survey == SURVEY_LSST and not (a.properties.get("lsst_ss_object_id") or a.properties.get("lsst_ssObjectId")):
        return f"lsst:{a.object_id}"
    return None


def unit_vector(ra_deg: float, dec_deg: float) -> tuple[float, float, float]:
    r, d = math.radians(ra_deg), math.radians(dec_deg)
    cd = math.cos(d)
    return cd * math.cos(r), cd * math.sin(r), math.sin(d)


def direction(x: float, y: float, z: float) -> tuple[float, float]:
    """(ra, dec) in degrees of a (not necessarily unit) vector; ra in [0, 360)."""
    ra = math.degrees(math.atan2(y, x)) % 360.0
    if ra >= 360.0:
        ra = 0.0
    return ra, math.degrees(math.atan2(z, math.hypot(x, y)))


def make_locus_id(first_alert_id: str, mjd: float) -> str:
    """A stable, unique locus id derived from the alert that created the locus.

    Deterministic so that replaying a stream recreates the same ids (the store
    write is then a no-op); shaped like ANTARES's (``ANT2020abcde``) with our
    prefix: ``ALB`` + year of the first alert + 10 base-32 characters of a hash
    (50 bits: no collision expected below ~10^7 loci per year).
    """
    try:
        year = mjd_to_datetime(mjd).year
    except (OverflowError, ValueError):  # NaN or absurd dates still get an id
        year = 0
    digest = int.from_bytes(hashlib.blake2b(first_alert_id.encode(), digest_size=8).digest(), "big")
    chars = []
    for _ in range(10):
        chars.append(_B32[digest & 31])
        digest >>= 5
    return f"ALB{year}{''.join(chars)}"


def mjd_to_datetime(mjd: float) -> datetime.datetime:
    return datetime.datetime(1858, 11, 17) + datetime.timedelta(days=float(mjd))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _sort_key(x: Any) -> tuple:
    """Numbers in numeric order, then strings (ANTARES lists ``field`` as [827, 828, 850, 1858])."""
    return (isinstance(x, str), x if not isinstance(x, str) else 0, str(x))


class Aggregates:
    """ANTARES's internal locus properties, folded over alerts one at a time.

    Folding is O(1) per alert, so a locus of thousands of alerts gaining one more
    costs nothing extra; :func:`aggregate_properties` folds a whole list from an
    empty state, and a locus loaded from the store is re-folded from its stored
    alerts, so a partially applied write replayed after a crash converges to the
    same values.
    """

    __slots__ = ("brightest", "n", "n_mag", "n_pos", "newest", "oldest", "only_pos", "pos", "sets", "ztf_newest",
                 "lsst_newest")

    def __init__(self) -> None:
        self.n = 0
        #: detections behind the position, the exact sum of their unit vectors (×2^62), and the
        #: one detection's own (ra, dec) while there is only one.
        self.n_pos = 0
        self.pos = [0, 0, 0]
        self.only_pos: tuple[float, float] | None = None
        self.n_mag = 0
        self.newest: Alert | None = None
        self.oldest: Alert | None = None
        self.brightest: Alert | None = None
        self.ztf_newest: Alert | None = None
        self.lsst_newest: Alert | None = None
        self.sets: dict[str, dict[str, set]] = {}

    def add(self, a: Alert) -> None:
        self.n += 1
        if counts_for_position(a):
            self.n_pos += 1
            self.only_pos = (a.ra, a.dec) if self.n_pos == 1 else None
            for i, c in enumerate(unit_vector(a.ra, a.dec)):
                self.pos[i] += round(c * _POS_SCALE)
        key = (a.mjd, a.alert_id)
        if self.newest is None or key >= (self.newest.mjd, self.newest.alert_id):
            self.newest = a
        if self.oldest is None or key < (self.oldest.mjd, self.oldest.alert_id):
            self.oldest = a
        if _finite(a.mag):
            self.n_mag += 1
            b = self.brightest
            if b is None or (a.mag, a.mjd, a.alert_id) < (b.mag, b.mjd, b.alert_id):
                self.brightest = a
        p = a.properties
        if a.survey in (SURVEY_ZTF_DETECTION, SURVEY_ZTF_UPPER_LIMIT):
            z = self.sets.setdefault("ztf", {"field": set(), "id": set(), "rcid": set(), "ssnamenr": set()})
            if a.object_id:
                z["id"].add(a.object_id)
                if self.ztf_newest is None or key >= (self.ztf_newest.mjd, self.ztf_newest.alert_id):
                    self.ztf_newest = a
            for k in ("field", "rcid"):
                v = p.get(f"ztf_{k}")
                if v is not None:
                    z[k].add(v)
            if a.survey == SURVEY_ZTF_DETECTION:
                ssn = p.get("ztf_ssnamenr")
                z["ssnamenr"].add("null" if ssn in (None, "") else str(ssn))
        elif a.survey == SURVEY_LSST:
            lset = self.sets.setdefault("lsst", {"dia_object_id": set(), "ss_object_id": set()})
            ss = p.get("lsst_ss_object_id") or p.get("lsst_ssObjectId")
            if ss:
                lset["ss_object_id"].add(str(ss))
            elif a.object_id:
                lset["dia_object_id"].add(str(a.object_id))
                if self.lsst_newest is None or key >= (self.lsst_newest.mjd, self.lsst_newest.alert_id):
                    self.lsst_newest = a

    def position(self) -> tuple[float, float] | None:
        """The mean position of the detections folded so far (degrees), None without any.

        The mean of unit vectors, not of (ra, dec) pairs, so it is right across RA 0/360 and at
        the poles; within a locus (≤ 1″ across) the two agree to ~10⁻¹¹″. A single detection's
        position is returned exactly.
        """
        if self.n_pos == 0:
            return None
        if self.only_pos is not None:
            return self.only_pos
        x, y, z = (float(c) for c in self.pos)
        return direction(x, y, z)

    def position_sums(self) -> tuple[int, tuple[float, float, float]]:
        """(number of detections, sum of their unit vectors): what association moves a locus with."""
        return self.n_pos, tuple(float(c) / _POS_SCALE for c in self.pos)

    def survey_objects(self) -> frozenset[str]:
        """The survey objects folded so far, keyed as :func:`survey_object_key` does."""
        z = self.sets.get("ztf", {}).get("id", ())
        lsst = self.sets.get("lsst", {}).get("dia_object_id", ())
        return frozenset([*(f"ztf:{o}" for o in z), *(f"lsst:{o}" for o in lsst)])

    def properties(self) -> dict[str, Any]:
        if self.n == 0:
            return {"num_alerts": 0, "num_mag_values": 0}
        props: dict[str, Any] = {"num_alerts": self.n, "num_mag_values": self.n_mag}
        for label, a in (("newest", self.newest), ("oldest", self.oldest), ("brightest", self.brightest)):
            if a is None:
                continue
            props[f"{label}_alert_id"] = a.alert_id
            if _finite(a.mag):
                props[f"{label}_alert_magnitude"] = float(a.mag)
            props[f"{label}_alert_observation_time"] = float(a.mjd)
        # ANTARES's nested ``survey`` property, read by filters as
        # ``locus.properties['survey']['ztf']['ssnamenr']`` or ``[...]['lsst']['dia_object_id']``.
        props["survey"] = {s: {k: sorted(v, key=_sort_key) for k, v in d.items()} for s, d in sorted(self.sets.items())}
        if self.ztf_newest is not None:
            # ANTARES names the locus after the newest alert's ZTF object.
            props["ztf_object_id"] = self.ztf_newest.object_id
        if "ztf" in self.sets:
            ssn = sorted(s for s in self.sets["ztf"]["ssnamenr"] if s != "null")
            props["ztf_ssnamenr"] = ssn[-1] if ssn else "null"
        if self.lsst_newest is not None:
            props["lsst_dia_object_id"] = str(self.lsst_newest.object_id)
        return props


def aggregate_properties(alerts: list[Alert]) -> dict[str, Any]:
    """The ANTARES internal locus properties of a whole alert list."""
    agg = Aggregates()
    for a in alerts:
        agg.add(a)
    return agg.properties()


@dataclass
class Provenance:
    """Who set a tag or property: which filter revision, under which pipeline version.

    A backfill (``albireo filter backfill --write``) also records its run id and the wall-clock
    time it wrote (``backfill_run``, ``set_at``, a Unix time); the live pipeline leaves them None.
    """

    filter: str
    revision: str
    pipeline_version: str
    set_at_mjd: float | None = None
    backfill_run: str | None = None
    set_at: float | None = None


class EventMetadata(dict):
    """One multi-messenger event's notice metadata on a locus: a dict, readable as attributes too.

    ANTARES hands filters ``locus.grav_wave_events_metadata[gracedb_id]`` as a ``DevkitGravWaveNotice``
    (``.notice_type``, ``.false_alarm_rate``, ``.notice_datetime`` ...); this keeps the stored form a
    plain JSON dict while filters written for ANTARES read the attributes they expect. Times come
    back as aware ``datetime`` objects; ``skymap`` is None (the map stays in the notice store, a
    locus does not carry a megabyte per event).
    """

    _TIMES = ("notice_datetime", "event_datetime")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "skymap":
            return None
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        if name in self._TIMES and isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value
        return value

    def __reduce__(self):
        return (EventMetadata, (dict(self),))


def _as_metadata(d: dict[str, Any]) -> dict[str, EventMetadata]:
    return {k: v if isinstance(v, EventMetadata) else EventMetadata(v if isinstance(v, dict) else {})
            for k, v in (d or {}).items()}


class HaltPipeline(Exception):  # noqa: N818 - the ANTARES name filters know
    """Raised by :meth:`Locus.halt`: the filter stops the chain for this locus (no later filter runs on it).

    Not an error: ANTARES's level-1 filters (``bad_detection``, ``bad_seeing``) use it to drop a bad
    detection from further filtering. What the halting filter set before halting stays.
    """


def _time_order(a: Alert) -> tuple[float, str]:
    return (a.mjd, a.alert_id)


@dataclass(eq=False)
class Locus:
    """A place on the sky and everything the broker knows of it."""

    locus_id: str
    ra: float
    dec: float
    alerts: list[Alert] = field(default_factory=list)
    internal_properties: dict[str, Any] = field(default_factory=dict)
    user_properties: dict[str, Any] = field(default_factory=dict)
    user_tags: set[str] = field(default_factory=set)
    catalog_objects: dict[str, list[dict]] = field(default_factory=dict)
    #: the catalog-set version the cached ``catalog_objects`` were matched against.
    catalog_version: str = ""
    grav_wave_events_metadata: dict[str, Any] = field(default_factory=dict)
    #: alert id → GW events containing it (``gracedb_id``, ``contour_level``, ``contour_area``).
    alert_grav_wave_events: dict[str, list[dict]] = field(default_factory=dict)
    #: neutrino event id → its notice metadata (the neutrino twin of ``grav_wave_events_metadata``).
    neutrino_events_metadata: dict[str, Any] = field(default_factory=dict)
    #: alert id → neutrino events containing it (``event_id``, ``contour_level``, ``contour_area``).
    alert_neutrino_events: dict[str, list[dict]] = field(default_factory=dict)
    #: tag or ``property:<name>`` → :class:`Provenance`.
    provenance: dict[str, Provenance] = field(default_factory=dict)
    #: set by the filter runner while a filter runs, so writes are attributed.
    _current: Provenance | None = field(default=None, repr=False)
    #: tags set during the current filter call (the runner reads it to route streams).
    _run_tags: set[str] | None = field(default=None, repr=False)
    _timeseries: dict[str, Any] = field(default_factory=dict, repr=False)
    #: set where this locus object is handed to exactly one filter call (a sandbox child decodes
    #: a fresh locus per call): the first ``timeseries()`` build is then nobody else's, and is
    #: handed out as is instead of kept and copied.
    _single_use: bool = field(default=False, repr=False)
    _agg: Aggregates | None = field(default=None, repr=False)
    #: where the store's position row of this locus is (as loaded, or as claimed): a store adapter
    #: whose rows are keyed by pixel moves the row when the locus has moved to another pixel.
    stored_position: tuple[float, float] | None = field(default=None, repr=False)
    #: the filter that called :meth:`halt` during the current filter run (no later filter runs); the
    #: runners reset it at the start of each run, and it is never stored.
    halted_by: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.grav_wave_events_metadata = _as_metadata(self.grav_wave_events_metadata)
        self.neutrino_events_metadata = _as_metadata(self.neutrino_events_metadata)

    # ---- identity and position -------------------------------------------------------
    @property
    def id(self) -> str:
        return self.locus_id

    @property
    def location(self):
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        return SkyCoord(ra=self.ra, dec=self.dec, unit=u.deg)

    # ---- alerts ------------------------------------------------------------------------
    def add_alerts(self, new: list[Alert]) -> list[Alert]:
        """Add alerts not already present (by id); keep time order; return those added.

        The locus then stands at the mean of its detections (see :meth:`Aggregates.position`),
        as ANTARES's loci do: the id stays the founder's, the position follows the alerts.
        """
        self._fold()
        added = []
        alerts = self.alerts
        # A packet comes trigger first, then its older history: appended and sorted once (Timsort
        # merges the two runs in linear time), not inserted one by one. Ids are unique here, so the
        # order is the one insertion gave.
        unordered = False
        for a in new:
            if a.alert_id in self._known:
                continue
            self._known.add(a.alert_id)
            a.locus_id = self.locus_id
            a.grav_wave_events = self.alert_grav_wave_events.get(a.alert_id, a.grav_wave_events)
            a.neutrino_events = self.alert_neutrino_events.get(a.alert_id, a.neutrino_events)
            added.append(a)
            self._agg.add(a)
            if not unordered and alerts and (a.mjd, a.alert_id) < (alerts[-1].mjd, alerts[-1].alert_id):
                unordered = True
            alerts.append(a)
        if unordered:
            alerts.sort(key=_time_order)
        if added:
            self.internal_properties.update(self._agg.properties())
            pos = self._agg.position()
            if pos is not None:
                self.ra, self.dec = pos
            self._timeseries.clear()
        return added

    def _fold(self) -> Aggregates:
        if self._agg is None:  # first use since load: fold the stored alerts once
            self._agg = Aggregates()
            for a in self.alerts:
                self._agg.add(a)
            self._known = {a.alert_id for a in self.alerts}
        return self._agg

    def position_sums(self) -> tuple[int, tuple[float, float, float]]:
        """How many detections the position averages and the sum of their unit vectors.

        Association uses it to move the locus as alerts of a batch join it; a locus whose
        alerts carry no position (none stored yet) has 0.
        """
        return self._fold().position_sums()

    def survey_objects(self) -> frozenset[str]:
        """The survey objects (ZTF ``objectId``, Rubin ``diaObjectId``) among this locus's alerts."""
        return self._fold().survey_objects()

    # The devkit names, for filters.
    @property
    def alert(self) -> Alert:
        """The newest alert: the one being ingested."""
        return self.alerts[-1]

    @property
    def grav_wave_events(self) -> list[str]:
        return list(self.grav_wave_events_metadata)

    @property
    def neutrino_events(self) -> list[str]:
        return list(self.neutrino_events_metadata)

    @property
    def catalogs(self) -> list[str]:
        return list(self.catalog_objects)

    # ---- properties and tags -----------------------------------------------------------
    @property
    def properties(self) -> dict[str, Any]:
        return self.internal_properties | self.user_properties

    @property
    def tags(self) -> set[str]:
        return self.user_tags

    def tag(self, value: str) -> None:
        if not isinstance(value, str):
            raise ValueError("Tags must be strings")
        self.user_tags.add(value)
        if self._run_tags is not None:
            self._run_tags.add(value)
        if self._current is not None:
            self.provenance.setdefault(value, self._current)

    def halt(self) -> HaltPipeline:
        """Stop the filter chain for this locus (ANTARES's ``locus.halt()``); raises :class:`HaltPipeline`.

        Filters write ``raise locus.halt()``, as ANTARES's documentation shows; this raises itself,
        so a bare ``locus.halt()`` halts too. The runners treat it as a successful, final run.
        """
        raise HaltPipeline(f"halted by {self._current.filter}" if self._current else "halted")

    def set_property(self, key: str, value: str | float | int) -> None:
        if not isinstance(value, (str, float, int)):
            raise ValueError("Properties must be integer, string or float")
        if isinstance(value, float) and not (-ES_FLOAT_MAX <= value <= ES_FLOAT_MAX):
            raise ValueError(f"Value `{value}` must be between {-ES_FLOAT_MAX} and {ES_FLOAT_MAX}")
        self.user_properties[key] = value
        if self._current is not None:
            self.provenance[f"property:{key}"] = self._current

    # ---- light curves --------------------------------------------------------------------
    def timeseries(self, survey: str = "ztf"):
        """The devkit's timeseries (astropy ``TimeSeries``), built once and copied per call.

        On a locus decoded for a single filter call (``_single_use``, a sandbox child's) the
        first build is handed out itself: no other caller could see it.

        Magnitude corrections use the devkit's own ``original_correct_mags`` so
        that the values are exactly those ANTARES filters expect. Surveys that
        select the same alerts (``ztf`` and ``all`` on a ZTF locus) share one build.
        """
        if survey not in SURVEYS:
            raise ValueError(f"{survey} not allowed as survey value")
        cached = self._timeseries.get(survey)
        if cached is None:
            codes = SURVEYS[survey]
            rows = [a for a in self.alerts if a.properties["ant_survey"] in codes]
            key = tuple(id(a) for a in rows)
            cached = self._timeseries.get(key)
            if cached is None:
                if self._single_use and not self._timeseries:
                    # the first build on a one-call locus: a copy of it would protect no one, and
                    # costs about 40% of the build (15 ms on an 80-alert ZTF locus). Marked, so a
                    # second call builds the shared table and copies it, as on any locus.
                    self._timeseries[("handed out", key)] = True
                    return self._build_timeseries(rows)
                cached = self._timeseries[key] = self._build_timeseries(rows)
            self._timeseries[survey] = cached
        mine = cached.copy()
        mine.pristine_source = cached  # lets ``mine.to_pandas()`` reuse one frame while ``mine`` is unchanged
        return mine

    def _build_timeseries(self, rows: list[Alert]):
        from broker.lightcurve import LightCurveTable, build_table, carry_time_cache

        if not rows:  # what the devkit does (astropy refuses an empty time column)
            return LightCurveTable(data=[], time=[])
        ts = build_table([a.id for a in rows], [a.properties for a in rows], [mjd_to_datetime(a.mjd) for a in rows])
        ts["time"].datetime64  # noqa: B018 - computed once here; every copy (and to_pandas) carries it
        import contextlib
        import io

        from antares_devkit.models import original_correct_mags

        # The corrections read only these columns; converting just them to pandas gives the same frame values.
        used = ts[["time", *(c for c in ts.colnames if c in _CORRECTION_INPUTS)]]
        carry_time_cache(ts, used, copy=False)
        with contextlib.redirect_stdout(io.StringIO()):
            df, _, _ = original_correct_mags(used)
        for col in ("ant_mag_corrected", "ant_magerr_corrected", "ant_magulim_corrected", "ant_magllim_corrected"):
            ts[col] = np.ma.masked_invalid(np.asarray(df[col].to_numpy(), dtype=float))
        return ts

    def lightcurve(self, survey: str = "ztf"):
        columns = [
            "alert_id",
            "ant_mjd",
            "ant_survey",
            "ant_ra",
            "ant_dec",
            "ant_passband",
            "ant_mag",
            "ant_magerr",
            "ant_maglim",
            "ant_mag_corrected",
            "ant_magerr_corrected",
            "ant_magulim_corrected",
            "ant_magllim_corrected",
        ]
        ts = self.timeseries(survey)
        for column in set(columns) - set(ts.colnames):
            ts[column] = np.ma.masked_invalid(np.full(len(ts), np.nan))
        return ts[columns]

    # ---- summaries ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The JSON-friendly record of the locus (no alerts): what streams and indexes carry."""
        return {
            "locus_id": self.locus_id,
            "ra": self.ra,
            "dec": self.dec,
            "properties": self.properties,
            "tags": sorted(self.user_tags),
            "catalogs": sorted(self.catalog_objects),
            "num_alerts": self.internal_properties.get("num_alerts", len(self.alerts)),
        }


def locus_record(locus: Locus) -> dict[str, Any]:
    """Every stored column of a locus except its alerts (JSON-friendly values)."""
    return {
        "locus_id": locus.locus_id,
        "ra": locus.ra,
        "dec": locus.dec,
        "internal_properties": locus.internal_properties,
        "user_properties": locus.user_properties,
        "tags": sorted(locus.user_tags),
        "catalog_objects": locus.catalog_objects,
        "catalog_version": locus.catalog_version,
        "grav_wave_events_metadata": locus.grav_wave_events_metadata,
        "alert_grav_wave_events": locus.alert_grav_wave_events,
        "neutrino_events_metadata": locus.neutrino_events_metadata,
        "alert_neutrino_events": locus.alert_neutrino_events,
        "provenance": {k: vars(v) for k, v in locus.provenance.items()},
    }


def locus_from_record(rec: dict[str, Any], alerts: list[Alert] | None = None) -> Locus:
    """Inverse of :func:`locus_record`."""
    gw = dict(rec.get("alert_grav_wave_events") or {})
    nu = dict(rec.get("alert_neutrino_events") or {})
    for a in alerts or []:
        a.grav_wave_events = gw.get(a.alert_id, [])
        a.neutrino_events = nu.get(a.alert_id, [])
    return Locus(
        locus_id=rec["locus_id"],
        ra=float(rec["ra"]),
        dec=float(rec["dec"]),
        alerts=list(alerts or []),
        internal_properties=dict(rec.get("internal_properties") or {}),
        user_properties=dict(rec.get("user_properties") or {}),
        user_tags=set(rec.get("tags") or []),
        catalog_objects=dict(rec.get("catalog_objects") or {}),
        catalog_version=rec.get("catalog_version") or "",
        grav_wave_events_metadata=dict(rec.get("grav_wave_events_metadata") or {}),
        alert_grav_wave_events=gw,
        neutrino_events_metadata=dict(rec.get("neutrino_events_metadata") or {}),
        alert_neutrino_events=nu,
        provenance={k: Provenance(**v) for k, v in (rec.get("provenance") or {}).items()},
        stored_position=(float(rec["ra"]), float(rec["dec"])),
    )
