"""One revision of outgoing alerts for an event: the GCN JSON notices, the VOEvent, the circular.

Pure functions of (event record, its candidates, record number, issue time): the same inputs give
the same bytes, which is what makes revision numbering honest (a new ``record_number`` only when
the content changed, :func:`content_hash`) and lets the circular be checked against a golden file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from broker.multimessenger.notice import GW, NEUTRINO
from broker.multimessenger.outgoing.candidates import Candidate
from broker.multimessenger.schemas import GCN_BASE_URL, validate_json

NEUTRINO_SCHEMA = GCN_BASE_URL + "icecube/single_neutrino_alerts.schema.json"
OPTICAL_SCHEMA = GCN_BASE_URL + "boom/alert.schema.json"
#: who we say we are in ``mission`` / the VOEvent ``Who``.
MISSION = "Albireo"
IVORN_ROOT = "ivo://albireo.broker/alerts"
#: the IceCube pipelines the schema knows (anything else is left out, not sent as an invalid enum).
PIPELINES = ("Gold Track Alert", "Bronze Track Alert", "Cascade Alert")
KINDS = ("neutrino", "optical", "voevent", "circular")


@dataclass
class Localization90:
    """Where the event is, as the outgoing alerts state it: centre, 90 % error, 90 % area."""

    ra: float | None
    dec: float | None
    #: a radius (deg), or [semi-major, semi-minor, position angle] (deg) for an ellipse.
    error: float | list[float] | None
    containment: float
    systematic_included: bool
    area90: float | None
    shape: str
    healpix_url: str | None = None


def localization90(event: dict[str, Any]) -> Localization90 | None:
    """The event's localization as 90 % numbers; None for a retracted or unlocalised event.

    A circle or ellipse at 90 % keeps its own numbers; a map gives its 90 % area and, as the
    error, the radius of a disc of that area (what a circular quotes for a map).
    """
    spec = event.get("localization")
    if not spec:
        return None
    summary = event.get("summary") or {}
    areas = summary.get("areas") or {}
    area90 = areas.get("90")
    center = summary.get("center") or [spec.get("ra"), spec.get("dec")]
    ra, dec = (None if c is None else round(float(c), 4) for c in center)
    shape = spec.get("shape", "circle")
    cont = float(spec.get("containment") or 0.9)
    err: float | list[float] | None = None
    if shape == "circle" and spec.get("radius") is not None:
        err = round(float(spec["radius"]), 4)
        area90 = area90 if area90 is not None else math.pi * err**2
    elif shape == "ellipse" and spec.get("a") is not None:
        err = [round(float(spec["a"]), 4), round(float(spec["b"]), 4), round(float(spec.get("pa") or 0.0), 2)]
    elif area90 is not None:
        err, cont = round(math.sqrt(float(area90) / math.pi), 4), 0.9
    return Localization90(ra, dec, err, cont, bool(spec.get("systematic_included")),
                          None if area90 is None else round(float(area90), 4), shape, spec.get("skymap_url"))


def alert_type(event: dict[str, Any], record_number: int) -> str:
    if event.get("status") == "retracted":
        return "retraction"
    return "initial" if record_number <= 1 else "update"


def _tense(event: dict[str, Any]) -> str:
    return "test" if event.get("test") else "current"


def neutrino_notice(event: dict[str, Any], record_number: int, alert_datetime: str) -> dict[str, Any]:
    """An IceCube-style single-neutrino notice (``icecube/single_neutrino_alerts``) for a neutrino event."""
    meta = event.get("metadata") or {}
    out: dict[str, Any] = {
        "$schema": NEUTRINO_SCHEMA, "mission": MISSION, "messenger": "Neutrino",
        "record_number": record_number, "event_name": [str(event.get("name") or event["event_id"])],
        "id": [str(event["event_id"])], "alert_datetime": alert_datetime,
        "alert_type": alert_type(event, record_number), "alert_tense": _tense(event),
        "number_of_events": 1, "trigger_time": event.get("event_time"),
    }
    if meta.get("instrument"):
        out["instrument"] = str(meta["instrument"])
    if meta.get("pipeline") in PIPELINES:
        out["pipeline"] = meta["pipeline"]
    if meta.get("alert_topology") in ("Track", "Shower", "Multiplet"):
        out["alert_topology"] = meta["alert_topology"]
    loc = localization90(event) if event.get("status") != "retracted" else None
    if loc is not None and loc.ra is not None:
        out.update(ra=loc.ra, dec=loc.dec, containment_probability=loc.containment,
                   systematic_included=loc.systematic_included)
        if loc.error is not None:
            out["ra_dec_error"] = loc.error
        if loc.healpix_url:
            out["healpix_url"] = loc.healpix_url
    # GCN's names first, then the names other formats' parsers use (VOEvent ``energy``, ``signalness``)
    for field, aliases in (("nu_energy", ("nu_energy", "energy")), ("p_astro", ("p_astro", "signalness")),
                           ("far", ("far",))):
        v = next((meta[k] for k in aliases if meta.get(k) is not None), None)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[field] = float(v)
    return {k: v for k, v in out.items() if v is not None}


def optical_notice(event: dict[str, Any], candidates: list[Candidate], record_number: int,
                   alert_datetime: str) -> dict[str, Any]:
    """A BOOM-style optical-candidate notice: every candidate a target crossmatched to the event."""
    messenger = event.get("messenger")
    ref = {"ref_type": "GW" if messenger == GW else "Neutrino",
           "ref_instrument": str(event.get("mission") or ("LVK" if messenger == GW else "IceCube")),
           "ref_ID": str(event["event_id"])}
    targets, photometry = [], []
    if event.get("status") != "retracted":
        for c in candidates:
            targets.append({"event_name": c.name, "ra": c.ra, "dec": c.dec,
                            "gcn_crossmatch": [dict(ref, reference={"contour_level": c.contour_level,
                                                                    "contour_area": c.contour_area})]})
            for p in c.photometry:
                row: dict[str, Any] = {"event_name": c.name, "observation_start": p.time, "instrument": p.instrument,
                                       "filter": p.filter, "mag_system": "AB"}
                for k in ("mag", "mag_error", "limiting_mag"):
                    if getattr(p, k) is not None:
                        row[k] = getattr(p, k)
                photometry.append(row)
    return {"$schema": OPTICAL_SCHEMA, "mission": MISSION, "messenger": "EM", "record_number": record_number,
            "alert_datetime": alert_datetime, "alert_type": alert_type(event, record_number),
            "alert_tense": _tense(event), "data": {"targets": targets, "photometry": photometry}}


def content_hash(event: dict[str, Any], candidates: list[Candidate]) -> str:
    """What a revision says, without its number and time: equal hashes mean no new revision is due."""
    loc = localization90(event)
    body = {"status": event.get("status"), "name": event.get("name"), "time": event.get("event_time"),
            "metadata": {k: event.get("metadata", {}).get(k) for k in ("far", "p_astro", "nu_energy", "pipeline")},
            "loc": None if loc is None else vars(loc), "candidates": [c.to_dict() for c in candidates]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def build_revision(event: dict[str, Any], candidates: list[Candidate], record_number: int,
                   alert_datetime: str) -> dict[str, Any]:
    """Every outgoing alert of one revision, validated; raises NoticeError if one fails its schema.

    Returns the stored record: ``event_id``, ``record_number``, ``alert_type``, ``alert_datetime``,
    ``content_hash``, and one entry per kind in :data:`KINDS` (a dict, a string, or None when the
    kind does not apply: no neutrino notice for a GW event, no optical notice without candidates
    unless it retracts an earlier one).
    """
    from broker.multimessenger.outgoing.circular import render_circular
    from broker.multimessenger.outgoing.voevent import build_voevent

    nu = neutrino_notice(event, record_number, alert_datetime) if event.get("messenger") == NEUTRINO else None
    optical = optical_notice(event, candidates, record_number, alert_datetime) \
        if candidates or event.get("status") == "retracted" else None
    for doc, schema in ((nu, NEUTRINO_SCHEMA), (optical, OPTICAL_SCHEMA)):
        if doc is not None:
            validate_json(doc, schema)
    return {"event_id": event["event_id"], "record_number": record_number,
            "alert_type": alert_type(event, record_number), "alert_datetime": alert_datetime,
            "content_hash": content_hash(event, candidates), "neutrino": nu, "optical": optical,
            "voevent": build_voevent(event, candidates, record_number, alert_datetime),
            "circular": render_circular(event, candidates, record_number, alert_datetime),
            "candidates": len(candidates)}
