"""Rubin/LSST alert packets (schemas v3.0 … v11.x) → canonical alerts.

Field names moved across schema versions; each canonical value is read from the first of its
known spellings: time ``midpointMjdTai`` (v5+) / ``midPointTai`` (v3–4), band ``band`` /
``filterName``, declination ``dec`` / ``decl``, PSF flux ``psfFlux`` / ``psFlux``.
Times: every version's alert times are MJD, TAI, in days. Schemas v6.0+ say so in their field
docs ("expressed as Modified Julian Date, International Atomic Time", v8.0+ adding "[d]"); v5.0
names the field ``midpointMjdTai``; v3.0/v4.0 (``midPointTai``) carry no doc, and the DPDD/APDB
they follow and the Science Pipelines that fill them (``ap_association``: ``midPointTai =
visitInfo.getDate().get(system=DateTime.MJD)``) use the same unit. ``ant_mjd`` is that value
(TAI, 37 s ahead of UTC since 2017; ZTF's ``jd`` is UTC). A time that is no plausible MJD
(:data:`PLAUSIBLE_MJD`: 1970–2100) is rejected with reason ``implausible_time``: the sample
packets of v3.0–v7.4 carry 1480360995.0 there (Unix seconds of 2016-11-28, against their own
docs), and storing it as an MJD would put the alert 4 million years ahead. Avro ``timestamp-*``
fields (v8.0's ``time_processed``, ``validityStart``) become MJD (UTC) floats, like every other
time a filter reads.

Fluxes are nJy, so AB magnitude = -2.5 log10(|flux|) + 31.4 and its error 1.0857 · err/|flux|.
As ZTF's ``magpsf`` does, the magnitude is of the absolute difference flux; the sign stays in
``lsst_psfFlux``. ``ant_maglim`` is the 5σ limit implied by the flux error (for non-detection
limits: by ``diaNoise``).

Ids: ``lsst_diasource:<diaSourceId>`` (survey 4), forced points
``lsst_diaforcedsource:<diaForcedSourceId>``, non-detection limits
``lsst_nondetection:<diaObjectId>-<ccdVisitId>``. Forced points carry a magnitude only at
SNR ≥ 3 (as for ZTF forced photometry). The object id is ``diaObjectId`` or, for solar-system
sources that have none, ``ssObjectId``. The trigger also carries the packet's ``diaObject`` /
``ssObject`` / ``ssSource`` fields as ``lsst_diaobject_*`` / ``lsst_ssobject_*`` /
``lsst_sssource_*`` properties, the aggregates filters need (as ZTF's candidate has ``ndethist``).
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from broker.alert import SURVEY_LSST, Alert, Packet
from broker.ingest.framing import DecodeError

AB_ZEROPOINT_NJY = 31.4
MAG_ERR_FACTOR = 1.0857  # 2.5 / ln(10)
FORCED_SNR_DETECTION = 3.0
_NAN = math.nan
_CUTOUTS = (("cutoutScience", "science"), ("cutoutTemplate", "template"), ("cutoutDifference", "difference"))
#: alert-level records copied onto the trigger, with their property prefix.
_ATTACHED = (("diaObject", "lsst_diaobject_"), ("ssObject", "lsst_ssobject_"), ("ssSource", "lsst_sssource_"))
_PREFIXED: dict[tuple[str, str], str] = {}

#: the top-level fields of a Rubin alert (any version); other columns (a re-serialising tool's)
#: are kept on the trigger as ``lsst_<column>``.
TOP_LEVEL_FIELDS = frozenset({
    "alertId", "diaSourceId", "observation_reason", "target_name", "diaSource", "prvDiaSources",
    "prvDiaForcedSources", "prvDiaNondetectionLimits", "diaObject", "ssObject", "ssSource", "MPCORB", "mpc_orbits",
    "cutoutDifference", "cutoutScience", "cutoutTemplate"})

#: the MJD range an alert time can have: 1970-01-01 to 2100-01-01. Catches the units a time field
#: is mistaken in — seconds (~1.5e9), milliseconds (~1.5e12), a JD given as MJD (~2.46e6).
PLAUSIBLE_MJD = (40587.0, 88069.0)
#: Avro ``timestamp-micros`` fields (fastavro gives datetimes), as their trigger property names.
_TIMESTAMP_PROPS = ("lsst_time_processed", "lsst_diaobject_validityStart")
_MJD_EPOCH = datetime.datetime(1858, 11, 17, tzinfo=datetime.UTC)


def _timestamp_mjd(value: datetime.datetime) -> float:
    """An Avro timestamp (a datetime, UTC when naive) as an MJD."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return (value - _MJD_EPOCH).total_seconds() / 86400.0


def _check_time(alert: Alert, where: str, schema: str) -> None:
    lo, hi = PLAUSIBLE_MJD
    if not lo <= alert.mjd <= hi:  # NaN fails too
        raise DecodeError("implausible_time", f"{schema}: {where} time {alert.mjd!r} of {alert.alert_id} is no "
                          f"plausible MJD (the schema's unit is MJD TAI days; plausible: {lo:.0f}–{hi:.0f}, "
                          "1970–2100)")


def _props(row: dict[str, Any], prefix: str = "lsst_", out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    cache = _PREFIXED
    for k, v in row.items():
        if v is None:
            continue
        key = cache.get((prefix, k))
        if key is None:
            key = cache[(prefix, k)] = prefix + k
        out[key] = v
    return out


def _first(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        v = row.get(n)
        if v is not None:
            return v
    return None


def _mag(flux: float | None) -> float | None:
    if flux is None or flux == 0 or not math.isfinite(flux):
        return None
    return -2.5 * math.log10(abs(flux)) + AB_ZEROPOINT_NJY


def _magerr(flux: float | None, err: float | None) -> float | None:
    if flux is None or err is None or flux == 0 or not math.isfinite(flux):
        return None
    return MAG_ERR_FACTOR * err / abs(flux)


def _limit(noise: float | None) -> float | None:
    if noise is None or not noise > 0:
        return None
    return -2.5 * math.log10(5.0 * noise) + AB_ZEROPOINT_NJY


def _mjd(row: dict[str, Any]) -> float:
    v = _first(row, "midpointMjdTai", "midPointTai")
    return _NAN if v is None else float(v)


def _radec(row: dict[str, Any]) -> tuple[float, float]:
    ra = row.get("ra")
    dec = _first(row, "dec", "decl")
    return (_NAN if ra is None else ra), (_NAN if dec is None else dec)


def _band(row: dict[str, Any]) -> str:
    return _first(row, "band", "filterName") or ""


def _source(row: dict[str, Any], object_id: str | None, is_history: bool) -> Alert:
    flux = _first(row, "psfFlux", "psFlux")
    err = _first(row, "psfFluxErr", "psFluxErr")
    ra, dec = _radec(row)
    return Alert(
        alert_id=f"lsst_diasource:{row['diaSourceId']}",
        survey=SURVEY_LSST,
        mjd=_mjd(row),
        ra=ra,
        dec=dec,
        passband=_band(row),
        mag=_mag(flux),
        magerr=_magerr(flux, err),
        maglim=_limit(err),
        properties=_props(row),
        object_id=object_id,
        is_history=is_history,
    )


def _forced(row: dict[str, Any], object_id: str | None) -> Alert:
    flux = _first(row, "psfFlux", "psFlux")
    err = _first(row, "psfFluxErr", "psFluxErr")
    significant = flux is not None and err is not None and err > 0 and abs(flux) / err >= FORCED_SNR_DETECTION
    ra, dec = _radec(row)
    props = _props(row)
    props["lsst_forced_phot"] = True
    return Alert(
        alert_id=f"lsst_diaforcedsource:{row['diaForcedSourceId']}",
        survey=SURVEY_LSST,
        mjd=_mjd(row),
        ra=ra,
        dec=dec,
        passband=_band(row),
        mag=_mag(flux) if significant else None,
        magerr=_magerr(flux, err) if significant else None,
        maglim=_limit(err),
        properties=props,
        object_id=object_id,
        is_history=True,
    )


def _nondetection(row: dict[str, Any], object_id: str | None) -> Alert:
    return Alert(
        alert_id=f"lsst_nondetection:{object_id}-{row.get('ccdVisitId')}",
        survey=SURVEY_LSST,
        mjd=_mjd(row),
        ra=_NAN,
        dec=_NAN,
        passband=_band(row),
        mag=None,
        magerr=None,
        maglim=_limit(row.get("diaNoise")),
        properties=_props(row),
        object_id=object_id,
        is_history=True,
    )


def _object_id(record: dict[str, Any], source: dict[str, Any]) -> str | None:
    obj = record.get("diaObject") or {}
    oid = _first(obj, "diaObjectId")
    if oid is None:
        oid = source.get("diaObjectId")
    if oid is None:
        oid = source.get("ssObjectId")
    if oid is None:
        oid = (record.get("ssObject") or record.get("ssSource") or {}).get("ssObjectId")
    return None if oid is None else str(oid)


def looks_like_lsst(record: dict[str, Any]) -> bool:
    """A Rubin alert by its fields, whatever its schema is named: a ``diaSource`` record with an
    id and a position."""
    src = record.get("diaSource")
    return isinstance(src, dict) and "diaSourceId" in src and "ra" in src


def normalize_lsst(record: dict[str, Any], schema: str) -> Packet:
    """Turn one decoded Rubin alert record (any schema v3.0 … v11.x) into a :class:`Packet`."""
    source = record["diaSource"]
    object_id = _object_id(record, source)
    trigger = _source(source, object_id, is_history=False)
    props = trigger.properties
    for key in ("alertId", "observation_reason", "target_name"):
        if record.get(key) is not None:
            props["lsst_" + key] = record[key]
    for key, value in record.items():  # a re-serialising tool's extra columns
        if key not in TOP_LEVEL_FIELDS and isinstance(value, (str, int, float, bool)):
            props.setdefault("lsst_" + key, value)
    for field, prefix in _ATTACHED:
        attached = record.get(field)
        if attached:
            _props(attached, prefix, props)
    if object_id is not None:
        props["lsst_object_id"] = object_id

    for key in _TIMESTAMP_PROPS:
        if isinstance(props.get(key), datetime.datetime):
            props[key] = _timestamp_mjd(props[key])

    history = [_source(row, object_id, True) for row in record.get("prvDiaSources") or ()]
    history.extend(_forced(row, object_id) for row in record.get("prvDiaForcedSources") or ())
    history.extend(_nondetection(row, object_id) for row in record.get("prvDiaNondetectionLimits") or ())
    _check_time(trigger, "diaSource", schema)
    for h in history:
        _check_time(h, "history", schema)
        ts = h.properties.get("lsst_time_processed")
        if isinstance(ts, datetime.datetime):
            h.properties["lsst_time_processed"] = _timestamp_mjd(ts)

    cutouts = {name: record[field] for field, name in _CUTOUTS if record.get(field) is not None}
    return Packet(trigger=trigger, history=history, schema=schema, cutouts=cutouts)
