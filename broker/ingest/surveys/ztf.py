"""ZTF alert packets → canonical alerts, the way ANTARES names them.

Ids and passbands copy ANTARES's own loci (antares-devkit's test data):
detections are ``ztf_candidate:<candid>`` with ``ant_survey`` 1; upper limits (history rows
whose ``candid`` is null) are ``ztf_upper_limit:<objectId>-<pid>`` with ``ant_survey`` 2 and no
position; passbands are ``g``/``R``/``i`` for fid 1/2/3. Properties are every non-null field of
the row prefixed ``ztf_`` (ANTARES drops nulls too) plus ``ztf_object_id``.

Forced photometry (``fp_hists``, or history rows without ``candid`` but with
``forcediffimflux`` as in ZTF's 3.5 ``forcedphot_test`` packets) is something ANTARES does not
ingest. We keep it as history so that light curves can use it, under its own id prefix
``ztf_fp:<objectId>-<pid>`` and with ``ztf_forced_phot`` set, so nothing confuses it with a
pipeline detection. Its magnitude follows ZTF's forced-photometry guide: ``magzpsci -
2.5 log10(flux)`` when flux/fluxunc ≥ 3 (then ``ant_survey`` 1, error 1.0857/SNR), otherwise
no magnitude and ``ant_survey`` 2 with ``diffmaglim`` as the limit.

Field names changed over the schema's history (pre-1.0 packets have ``alertId`` and no
``objectId``, and repeat the trigger as the last row of ``prv_candidates``: that row is the
trigger, not history, and is dropped); every lookup is ``.get`` so a missing field is absent,
never a crash.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

from broker import REPO_ROOT
from broker.alert import SURVEY_ZTF_DETECTION, SURVEY_ZTF_UPPER_LIMIT, Alert, Packet
from broker.ingest.framing import DecodeError

#: ZTF filter id → ANTARES passband spelling (``R`` is upper case in ANTARES loci).
PASSBANDS = {1: "g", 2: "R", 3: "i"}
JD_TO_MJD = 2400000.5
#: forced-photometry SNR above which a point counts as a measurement (ZTF fp guide).
FP_SNR_DETECTION = 3.0
#: ZTF writes -99999 for forced fluxes it could not measure.
_FP_BAD = -99999.0
_NAN = math.nan
_CUTOUTS = (("cutoutScience", "science"), ("cutoutTemplate", "template"), ("cutoutDifference", "difference"))

#: where the ZTF writer schemas we ship live: ``<version>/alert.avsc`` (see its README).
SCHEMA_DIR = REPO_ROOT / "schemas" / "ztf"
#: the top-level fields of a ZTF alert; any other column (a re-serialising tool's, e.g. a Spark
#: job's or another broker's) is kept on the trigger as ``ztf_<column>``.
TOP_LEVEL_FIELDS = frozenset({"schemavsn", "publisher", "objectId", "alertId", "candid", "candidate",
                              "prv_candidates", "fp_hists", "cutoutScience", "cutoutTemplate", "cutoutDifference"})

#: row key tuple → the same keys prefixed ``ztf_``, memoised: every row of one schema version has
#: the same keys in the same order, so each packet costs one tuple lookup per row, not per field.
_PREFIXED: dict[tuple[str, ...], tuple[str, ...]] = {}


def _props(row: dict[str, Any], object_id: str | None) -> dict[str, Any]:
    keys = tuple(row)
    pkeys = _PREFIXED.get(keys)
    if pkeys is None:
        pkeys = _PREFIXED[keys] = tuple("ztf_" + k for k in keys)
    out = {k: v for k, v in zip(pkeys, row.values(), strict=True) if v is not None}
    if object_id is not None:
        out["ztf_object_id"] = object_id
    return out


def _mjd(row: dict[str, Any]) -> float:
    jd = row.get("jd")
    return jd - JD_TO_MJD if jd is not None else _NAN


def _f(v: Any) -> float:
    return _NAN if v is None else v


def _detection(row: dict[str, Any], object_id: str | None, is_history: bool) -> Alert:
    return Alert(
        alert_id=f"ztf_candidate:{row['candid']}",
        survey=SURVEY_ZTF_DETECTION,
        mjd=_mjd(row),
        ra=_f(row.get("ra")),
        dec=_f(row.get("dec")),
        passband=PASSBANDS.get(row.get("fid"), str(row.get("fid"))),
        mag=row.get("magpsf"),
        magerr=row.get("sigmapsf"),
        maglim=row.get("diffmaglim"),
        properties=_props(row, object_id),
        object_id=object_id,
        is_history=is_history,
    )


def _upper_limit(row: dict[str, Any], object_id: str | None) -> Alert:
    return Alert(
        alert_id=f"ztf_upper_limit:{object_id}-{row.get('pid')}",
        survey=SURVEY_ZTF_UPPER_LIMIT,
        mjd=_mjd(row),
        ra=_NAN,
        dec=_NAN,
        passband=PASSBANDS.get(row.get("fid"), str(row.get("fid"))),
        mag=None,
        magerr=None,
        maglim=row.get("diffmaglim"),
        properties=_props(row, object_id),
        object_id=object_id,
        is_history=True,
    )


def _forced(row: dict[str, Any], object_id: str | None) -> Alert:
    flux = row.get("forcediffimflux")
    unc = row.get("forcediffimfluxunc")
    zp = row.get("magzpsci")
    mag = magerr = None
    if flux is not None and unc and zp is not None and flux > _FP_BAD and unc > _FP_BAD:
        snr = flux / unc
        if flux > 0 and snr >= FP_SNR_DETECTION:
            mag = zp - 2.5 * math.log10(flux)
            magerr = 1.0857 / snr
    props = _props(row, object_id)
    props["ztf_forced_phot"] = True
    return Alert(
        alert_id=f"ztf_fp:{object_id}-{row.get('pid')}",
        survey=SURVEY_ZTF_DETECTION if mag is not None else SURVEY_ZTF_UPPER_LIMIT,
        mjd=_mjd(row),
        ra=_NAN,
        dec=_NAN,
        passband=PASSBANDS.get(row.get("fid"), str(row.get("fid"))),
        mag=mag,
        magerr=magerr,
        maglim=row.get("diffmaglim"),
        properties=props,
        object_id=object_id,
        is_history=True,
    )


def schema_versions() -> list[str]:
    """The ZTF writer-schema versions shipped under ``schemas/ztf/``, oldest first."""
    found = [p.parent.name for p in SCHEMA_DIR.glob("*/alert.avsc")]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


@lru_cache(maxsize=8)
def ztf_schema(version: str) -> dict:
    """The parsed ZTF alert schema ``version`` (e.g. ``"3.2"``) shipped under ``schemas/ztf/``."""
    import fastavro

    path = SCHEMA_DIR / str(version) / "alert.avsc"
    if not path.is_file():
        raise DecodeError("unknown_schema_version", f"no ZTF alert schema {version!r} shipped "
                          f"(schemas/ztf has {', '.join(schema_versions())})")
    return fastavro.parse_schema(json.loads(path.read_text()))


def looks_like_ztf(record: dict[str, Any]) -> bool:
    """A ZTF alert by its fields, whatever its schema is named: a ``candidate`` record with a time
    and a position, and an object id (``objectId``, or pre-1.0 ``alertId``)."""
    cand = record.get("candidate")
    return (isinstance(cand, dict) and "jd" in cand and "ra" in cand and "dec" in cand
            and ("objectId" in record or "alertId" in record))


def _extra_columns(record: dict[str, Any], props: dict[str, Any]) -> None:
    """Keep a re-serialising tool's extra top-level columns: scalars as ``ztf_<col>``, a record's
    scalars as ``ztf_<col>_<field>``; lists and bytes are left out (no property type holds them)."""
    for key, value in record.items():
        if key in TOP_LEVEL_FIELDS or value is None:
            continue
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, (str, int, float, bool)):
                    props.setdefault(f"ztf_{key}_{k}", v)
        elif isinstance(value, (str, int, float, bool)):
            props.setdefault(f"ztf_{key}", value)


def normalize_ztf(record: dict[str, Any], schema: str) -> Packet:
    """Turn one decoded ZTF alert record into a :class:`Packet` (trigger + history + cutouts)."""
    cand = record["candidate"]
    object_id = record.get("objectId")
    if object_id is None and record.get("alertId") is not None:  # pre-1.0 packets
        object_id = str(record["alertId"])
    if cand.get("candid") is None and record.get("candid") is not None:
        cand = {**cand, "candid": record["candid"]}
    trigger = _detection(cand, object_id, is_history=False)
    if record.get("schemavsn") is not None:
        trigger.properties["ztf_schemavsn"] = record["schemavsn"]
    _extra_columns(record, trigger.properties)

    history: list[Alert] = []
    for row in record.get("prv_candidates") or ():
        if "candid" in row:
            if row["candid"] is not None and row["candid"] == cand.get("candid"):
                continue  # pre-1.0 packets repeat the trigger in its own history: it is the trigger
            if row["candid"] is not None:
                history.append(_detection(row, object_id, is_history=True))
            else:
                history.append(_upper_limit(row, object_id))
        elif "forcediffimflux" in row:
            history.append(_forced(row, object_id))
        else:  # no candid field at all: nothing marks it a detection, so it can only bound one
            history.append(_upper_limit(row, object_id))
    for row in record.get("fp_hists") or ():
        history.append(_forced(row, object_id))

    cutouts: dict[str, bytes] = {}
    for field, name in _CUTOUTS:
        stamp = record.get(field)
        if stamp and stamp.get("stampData") is not None:
            cutouts[name] = stamp["stampData"]
    return Packet(trigger=trigger, history=history, schema=schema, cutouts=cutouts)
