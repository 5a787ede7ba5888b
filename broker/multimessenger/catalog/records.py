"""Catalog records: one event, its localization and its candidate associations, as IceCat-1 tabulates them.

A record is a pure function of what the store holds about an event (the event state of
``multimessenger.revisions``, its notices, its localization, the loci that coincide with it), so
two publishers build the same record and a version can be checked for change by its
:func:`content_hash`. Columns follow IceCat-1 (arXiv:2304.01174): identifiers, times, the best-fit
direction with asymmetric 90 % errors, the 50 %/90 % areas, energy, signalness, false-alarm
rate, and a sky map per event; then one row per association (event ↔ locus) with the smallest
credible level containing one of the locus's alerts, that region's area, and the locus's distance
from the best-fit direction. Every record carries its provenance: which notice (and sender's
revision) it reflects, which notice gave the localization and how it was reconstructed, which
pipeline version built it, and when.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

import broker
from broker.multimessenger.catalog.identifiers import Identifiers
from broker.multimessenger.localization import (
    Circle,
    Ellipse,
    Localization,
    MultiOrderMap,
    Union,
    angular_distance_deg,
)
from broker.multimessenger.outgoing.candidates import Candidate

RECORD_SCHEMA = "albireo.catalog.record/1"
#: seconds per Julian year: GCN JSON and LVK give FAR in Hz, IceCat-1 (and IceCube's VOEvents) per year.
YEAR_S = 365.25 * 86400.0
#: fields left out of the content hash: they name a version, not what it says.
_VERSION_FIELDS = ("pid", "version", "content_hash", "created")


def _num(x: Any, nd: int | None = None) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float | np.floating | np.integer):
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, nd) if nd is not None else v


def _text(x: Any) -> str | None:
    """A scalar string for a table cell (LVK lists its instruments)."""
    if x is None or x == "" or x == []:
        return None
    return ",".join(map(str, x)) if isinstance(x, list | tuple) else str(x)


def _wrap(dra: np.ndarray) -> np.ndarray:
    return (np.asarray(dra, float) + 180.0) % 360.0 - 180.0


def errors90(loc: Localization, center: tuple[float, float]) -> dict[str, float | None]:
    """Asymmetric 90 % errors (deg) of RA and Dec around ``center``, as IceCat-1 quotes them.

    From the extent of the 90 % region: exact for circles and ellipses (their bounding box on the
    tangent plane, RA errors divided by cos δ), from the region's pixels for a map and the union of
    its parts for several circles. RA errors are capped at 180°, Dec errors at the poles.
    """
    ra0, dec0 = center
    cosd = max(math.cos(math.radians(dec0)), 1e-9)

    def box(dx: float, dy: float, cra: float, cdec: float) -> tuple[float, float, float, float]:
        off = float(_wrap(cra - ra0))
        return off + dx / cosd, off - dx / cosd, cdec + dy, cdec - dy

    if isinstance(loc, Circle):
        r = loc.radius_at(90.0)
        boxes = [box(r, r, *loc.center)]
    elif isinstance(loc, Ellipse):
        s = loc._scale(90.0)
        a, b, pa = loc.a * s, loc.b * s, math.radians(loc.pa)
        dx = math.hypot(a * math.sin(pa), b * math.cos(pa))
        dy = math.hypot(a * math.cos(pa), b * math.sin(pa))
        boxes = [box(dx, dy, *loc.center)]
    elif isinstance(loc, Union):
        boxes = []
        for part in loc.parts:
            e = errors90(part, center)
            boxes.append((e["ra_err_plus"], -e["ra_err_minus"], dec0 + e["dec_err_plus"], dec0 - e["dec_err_minus"]))
    elif isinstance(loc, MultiOrderMap):
        import astropy_healpix as ah

        order, ipix = loc.region_cells(90.0)
        lon, lat = ah.healpix_to_lonlat(ipix, 2 ** order.astype(np.int64), order="nested")
        half = np.degrees(np.sqrt(4 * np.pi / (12 * 4.0 ** order))) / 2  # half a pixel's side
        dra = _wrap(lon.deg - ra0)
        boxes = [(float(np.max(dra + half / cosd)), float(np.min(dra - half / cosd)),
                  float(np.max(lat.deg + half)), float(np.min(lat.deg - half)))]
    else:
        return {"ra_err_plus": None, "ra_err_minus": None, "dec_err_plus": None, "dec_err_minus": None}
    ra_hi = max(b[0] for b in boxes)
    ra_lo = min(b[1] for b in boxes)
    dec_hi = min(max(b[2] for b in boxes), 90.0)
    dec_lo = max(min(b[3] for b in boxes), -90.0)
    return {"ra_err_plus": round(min(max(ra_hi, 0.0), 180.0), 4), "ra_err_minus": round(min(max(-ra_lo, 0.0), 180.0), 4),
            "dec_err_plus": round(max(dec_hi - dec0, 0.0), 4), "dec_err_minus": round(max(dec0 - dec_lo, 0.0), 4)}


def _far_per_year(meta: dict[str, Any], current_format: str | None, messenger: str | None) -> float | None:
    """FAR in yr⁻¹: GCN JSON / LVK give Hz; IceCube's VOEvents already give yr⁻¹ (their ``FAR`` unit)."""
    far = _num(meta.get("far"))
    if far is None:
        return None
    if current_format == "voevent" and messenger == "neutrino":
        return far
    return far * YEAR_S


def reconstruction(event: dict[str, Any], loc: Localization | None) -> dict[str, Any] | None:
    """How the localization was obtained: the sender's notice (its shape), until a scan replaces it.

    A reconstruction scan (``/api/scans``, SkyDriver pattern) that stores its result on the event
    as ``reconstruction`` (``{"kind": "scan", "scan_id": ..., "name": ...}``) is reported as is.
    """
    if event.get("reconstruction"):
        return dict(event["reconstruction"])
    spec = event.get("localization")
    if not spec:
        return None
    return {"kind": "notice", "shape": spec.get("shape"), "notice_id": event.get("localization_notice_id"),
            "model": type(loc).__name__ if loc is not None else None,
            "systematic_included": bool(spec.get("systematic_included"))}


def association(ids: Identifiers, event_id: str, center: tuple[float, float] | None, c: Candidate,
                version: int) -> dict[str, Any]:
    """One event ↔ locus association as a catalog row."""
    dist = None if center is None else round(float(np.atleast_1d(angular_distance_deg(c.ra, c.dec, *center))[0]), 6)
    detections = [p for p in c.photometry if p.mag is not None]
    return {"pid": ids.association(event_id, c.name, version), "concept_pid": ids.association(event_id, c.name),
            "event_id": event_id, "locus_id": c.name, "ra": round(float(c.ra), 6), "dec": round(float(c.dec), 6),
            "contour_level": _num(c.contour_level, 4), "contour_area": _num(c.contour_area, 4),
            "distance_deg": dist, "first_mjd": _num(c.first_mjd, 6), "n_detections": len(detections),
            "tags": list(c.tags)}


def build_record(event: dict[str, Any], notices: list[dict[str, Any]], loc: Localization | None,
                 candidates: list[Candidate], ids: Identifiers, *, license: str, version: int, created: str,
                 outgoing_record_number: int | None = None) -> dict[str, Any]:
    """Version ``version`` of an event's record (``created``: when this version is made, ISO 8601 UTC)."""
    eid = str(event["event_id"])
    meta = event.get("metadata") or {}
    summary = event.get("summary") or {}
    spec = event.get("localization") or {}
    retracted = event.get("status") == "retracted"
    center: tuple[float, float] | None = None
    if not retracted:
        if loc is not None:
            center = (float(loc.center[0]), float(loc.center[1]))
        elif summary.get("center"):
            center = (float(summary["center"][0]), float(summary["center"][1]))
        elif spec.get("ra") is not None and spec.get("dec") is not None:
            center = (float(spec["ra"]), float(spec["dec"]))
    errs = errors90(loc, center) if (loc is not None and center is not None) else dict.fromkeys(
        ("ra_err_plus", "ra_err_minus", "dec_err_plus", "dec_err_minus"))
    areas = summary.get("areas") or {}

    def area(level: float) -> float | None:
        v = _num(areas.get(f"{level:g}"))
        if v is None and loc is not None:
            v = _num(loc.area(level))
        return None if retracted or v is None else round(v, 4)

    by_id = {n["notice_id"]: n for n in notices}
    current = by_id.get(event.get("current_notice_id")) or {}
    energy = next((meta[k] for k in ("nu_energy", "energy") if _num(meta.get(k)) is not None), None)
    signal = next((meta[k] for k in ("p_astro", "signalness") if _num(meta.get(k)) is not None), None)
    assocs = [] if retracted else [association(ids, eid, center, c, version) for c in candidates]
    rec: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "pid": ids.event(eid, version), "concept_pid": ids.event(eid), "version": int(version),
        "event_id": eid, "name": str(event.get("name") or eid), "messenger": event.get("messenger"),
        "mission": event.get("mission"), "instrument": _text(meta.get("instrument") or meta.get("instruments")),
        "pipeline": _text(meta.get("pipeline")), "status": event.get("status"), "test": bool(event.get("test")),
        "event_time": event.get("event_time"), "event_mjd": _num(event.get("event_mjd"), 8),
        "ra": None if center is None else round(center[0] % 360.0, 6),
        "dec": None if center is None else round(center[1], 6),
        **errs,
        "area50": area(50.0), "area90": area(90.0),
        "localization_shape": None if retracted else spec.get("shape"),
        "energy": _num(energy, 6), "signalness": _num(signal, 6),
        "far": _num(_far_per_year(meta, current.get("format"), event.get("messenger")), 8),
        "n_associations": len(assocs),
        "associations": assocs,
        "window_days": list(event.get("window_days") or []),
        "license": license,
        "provenance": {
            "notice_id": event.get("current_notice_id"), "notice_kind": event.get("current_kind"),
            "notice_revision": event.get("current_revision"), "notice_created": event.get("created"),
            "notice_format": current.get("format"),
            "notices": [n["notice_id"] for n in notices], "localization_notice_id": event.get("localization_notice_id"),
            "reconstruction": reconstruction(event, loc),
            "outgoing_record_number": outgoing_record_number,
            "pipeline": "albireo", "pipeline_version": broker.__version__,
        },
        "created": created,
    }
    rec["content_hash"] = content_hash(rec)
    return rec


def content_hash(record: dict[str, Any]) -> str:
    """What a record says, without the fields naming its version: equal hashes, no new version due.

    Association identifiers carry the version number, so they are left out too; the pipeline
    version is kept (a new pipeline that computes the same event differently makes a new version,
    and one that computes it identically changes the hash only by its version string: a new
    version, honestly saying which code made it).
    """
    body = {k: v for k, v in record.items() if k not in _VERSION_FIELDS}
    body["associations"] = [{k: v for k, v in a.items() if k != "pid"} for a in record.get("associations") or []]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
