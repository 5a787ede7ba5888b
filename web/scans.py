"""Reconstruction scans: SkyDriver's REST routes under ``/api/scans``, and the scan pages.

* ``POST /api/scans`` (API key) — a neutrino notice or event description, a reconstruction, an nside
  progression, a priority: stores a *queued* scan and returns its id (``albireo scan-server`` runs it);
* ``GET /api/scans/<id>`` — the record; ``/status`` — its state; ``/manifest`` — progress (pixels done
  per nside, rate, ETA, complete); ``/result`` — ``{"skyscan_result": <SkyScanResult.serialize()>,
  "is_final": bool}``, partial while running, read by ``skyreader.SkyScanResult.deserialize``;
* ``DELETE /api/scans/<id>`` (API key: the scan's owner or an admin) — abort: queued tasks are skipped,
  results ignored;
* ``POST /api/scans/find`` — scans by ``run_id``, ``event_id``, ``source_event``, ``status``,
  ``priority``, ``reconstruction`` (SkyDriver's find); ``GET /api/scans/backlog`` — queued and
  running scans, realtime first; ``GET /api/scans`` and ``/api/scans/reconstructions``;
* ``/scans`` and ``/scans/<id>`` — the list, and one scan's progress, map (``/scans/<id>/map.png``,
  redrawn as it refines) and 50 %/90 % contours.

The blueprint reads and writes the store through its port only; it never touches the queue.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from broker.multimessenger.scans.model import (
    ABORTED,
    DONE,
    FINISHED,
    PRIORITIES,
    QUEUED,
    RUNNING,
    STATUSES,
    ScanEvent,
    ScanRequestError,
    parse_request,
)
from broker.multimessenger.scans.server import manifest
from web.auth import require_user
from web.backend import backend
from web.errors import ApiError, bad_request, not_found
from web.params import int_arg, json_object_body
from web.serialize import clean

bp = Blueprint("scans", __name__, template_folder="templates")

FIND_KEYS = {"run_id": int, "event_id": int, "source_event": str, "status": str, "priority": str,
             "reconstruction": str}
MAX_LIST = 1000


def _registry() -> dict[str, Any]:
    ext = current_app.extensions
    if "albireo.scan_registry" not in ext:
        from broker.assemble import scan_limits, scan_registry

        cfg = backend().cfg
        ext["albireo.scan_registry"] = (scan_registry(cfg), scan_limits(cfg))
    return ext["albireo.scan_registry"]


def _scan(scan_id: str) -> dict[str, Any]:
    if not scan_id.isalnum() or len(scan_id) > 64:
        raise bad_request("a scan id is letters and digits")
    rec = backend().store.scan(scan_id)
    if rec is None:
        raise not_found(f"no scan {scan_id!r}")
    return rec


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    ev = rec.get("event") or {}
    summ = rec.get("summary") or {}
    levels = summ.get("levels") or {}
    return clean({"scan_id": rec["scan_id"], "status": rec["status"], "priority": rec.get("priority"),
                  "reconstruction": rec.get("reconstruction"), "nside_progression": rec.get("nsides"),
                  "owner": rec.get("owner"),
                  "run_id": ev.get("run_id"), "event_id": ev.get("event_id"), "source_event": ev.get("source_event"),
                  "event": ev, "params": rec.get("params"), "created": rec.get("created"),
                  "started": rec.get("started"), "finished": rec.get("finished"), "reason": rec.get("reason", ""),
                  "best": summ.get("best"),
                  "area50_deg2": (levels.get("50") or {}).get("area_deg2"),
                  "area90_deg2": (levels.get("90") or {}).get("area_deg2")})


def scans_for_event(event_id: str) -> list[dict[str, Any]]:
    """The scans started from an event's notice (what the event page links to)."""
    return [_brief(r) for r in backend().store.scans(limit=MAX_LIST)
            if (r.get("event") or {}).get("source_event") == event_id]


# ---- API ----------------------------------------------------------------------------------------
@bp.post("/api/scans")
def api_create():
    who = require_user()
    body = json_object_body(required=True)
    registry, limits = _registry()
    try:
        spec = parse_request(body, registry, limits)
    except ScanRequestError as exc:
        return jsonify({"errors": [{"status": str(exc.status), "detail": r} for r in exc.reasons],
                        "message": str(exc)}), exc.status
    rec = spec.record()
    rec["owner"] = who.name
    backend().store.put_scan(rec)
    return jsonify({"data": {"scan_id": spec.scan_id, "status": rec["status"], "priority": spec.priority,
                             "nside_progression": spec.nsides, "reconstruction": spec.reconstruction,
                             "event": spec.event.to_dict()}}), 201


@bp.get("/api/scans")
def api_list():
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(STATUSES)}")
    limit = int_arg(request.args, "limit", 100, 1, MAX_LIST)
    recs = backend().store.scans(status=status, limit=limit)
    return jsonify({"data": [_brief(r) for r in recs], "meta": {"count": len(recs)}})


@bp.get("/api/scans/reconstructions")
def api_reconstructions():
    registry, _ = _registry()
    return jsonify({"data": [r.describe() for _, r in sorted(registry.items())]})


@bp.post("/api/scans/find")
def api_find():
    body = json_object_body()
    filt = body.get("filter", {})
    if not isinstance(filt, dict) or set(body) - {"filter", "limit"}:
        raise bad_request("the body is {\"filter\": {field: value, ...}, \"limit\": n}")
    for k, v in filt.items():
        typ = FIND_KEYS.get(k)
        if typ is None:
            raise bad_request(f"cannot filter on {str(k)[:64]!r}; fields: {', '.join(FIND_KEYS)}")
        if isinstance(v, bool) or not isinstance(v, typ):
            raise bad_request(f"filter {k} must be {'an integer' if typ is int else 'a string'}")
    limit = body.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise bad_request(f"limit must be an integer in [1, {MAX_LIST}]")
    out = []
    for rec in backend().store.scans(limit=100_000):
        b = _brief(rec)
        if all(b.get(k) == v for k, v in filt.items()):
            out.append(b)
            if len(out) >= limit:
                break
    return jsonify({"data": out, "meta": {"count": len(out)}})


@bp.get("/api/scans/backlog")
def api_backlog():
    store = backend().store
    recs = store.scans(status=RUNNING, limit=MAX_LIST) + store.scans(status=QUEUED, limit=MAX_LIST)
    recs.sort(key=lambda r: (PRIORITIES.index(r.get("priority", "realtime")), r["status"] != RUNNING,
                             r.get("created") or 0))
    return jsonify({"data": [dict(_brief(r), pixels_remaining=manifest(r)["pixels_remaining_this_step"])
                             for r in recs], "meta": {"count": len(recs)}})


@bp.get("/api/scans/<scan_id>")
def api_scan(scan_id: str):
    return jsonify({"data": _brief(_scan(scan_id))})


@bp.get("/api/scans/<scan_id>/status")
def api_status(scan_id: str):
    rec = _scan(scan_id)
    return jsonify({"data": {"scan_id": scan_id, "status": rec["status"], "complete": rec["status"] == DONE,
                             "finished": rec["status"] in FINISHED, "reason": rec.get("reason", ""),
                             "updated": rec.get("updated")}})


@bp.get("/api/scans/<scan_id>/manifest")
def api_manifest(scan_id: str):
    return jsonify({"data": clean(manifest(_scan(scan_id)))})


@bp.get("/api/scans/<scan_id>/result")
def api_result(scan_id: str):
    """SkyDriver's shape: the SkyScanResult serialisation (partial until ``is_final``)."""
    from broker.multimessenger.scans.result import serialize, skyscan_result

    rec = _scan(scan_id)
    pixels = backend().store.scan_pixels(scan_id)
    result = serialize(skyscan_result(ScanEvent.from_dict(rec["event"]), pixels)) if pixels else {}
    return jsonify({"skyscan_result": result, "is_final": rec["status"] == DONE, "status": rec["status"],
                    "summary": clean(rec.get("summary"))})


@bp.delete("/api/scans/<scan_id>")
def api_abort(scan_id: str):
    who = require_user()
    rec = _scan(scan_id)
    if rec.get("owner") not in (None, who.name) and not who.is_admin:
        raise ApiError(f"scan {scan_id} belongs to {rec['owner']}: only they or an admin may abort it", 403)
    if rec["status"] in FINISHED:
        raise ApiError(f"scan {scan_id} is already {rec['status']}", 409)
    rec.update(status=ABORTED, finished=time.time(), updated=time.time(), reason="aborted through the API")
    backend().store.put_scan(rec)
    return jsonify({"data": {"scan_id": scan_id, "status": ABORTED}})


# ---- pages --------------------------------------------------------------------------------------
@bp.get("/scans")
def scan_list():
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(STATUSES)}")
    recs = backend().store.scans(status=status, limit=int_arg(request.args, "limit", 200, 1, MAX_LIST))
    return render_template("scans.html", scans=[dict(_brief(r), manifest=manifest(r)) for r in recs],
                           status=status, statuses=STATUSES)


@bp.get("/scans/<scan_id>")
def scan_page(scan_id: str):
    rec = _scan(scan_id)
    return render_template("scan.html", scan=_brief(rec), manifest=manifest(rec), summary=rec.get("summary") or {})


_png_cache: dict[tuple, bytes] = {}
_png_lock = threading.Lock()


@bp.get("/scans/<scan_id>/map.png")
def scan_map(scan_id: str):
    from web.scanplot import render

    rec = _scan(scan_id)
    key = (scan_id, rec.get("updated"), rec["status"])
    with _png_lock:
        png = _png_cache.get(key)
    if png is None:
        pixels = backend().store.scan_pixels(scan_id)
        if not pixels:
            raise not_found(f"scan {scan_id} has no pixel results yet")
        png = render(ScanEvent.from_dict(rec["event"]), pixels, rec.get("summary") or {}, f"scan {scan_id[:12]}")
        with _png_lock:
            if len(_png_cache) > 32:
                _png_cache.clear()
            _png_cache[key] = png
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-cache"})
