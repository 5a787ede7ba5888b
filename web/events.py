"""Multi-messenger events: the event list and event pages, and their JSON twins under ``/api/mm``.

* ``/events`` — every stored event (GW, neutrino, optical candidates), newest first, from the
  index (``Index.search_events``), with its 90 % area and how many loci lie in it;
* ``/events/<id>`` — one event: the sky map with its 50 %/90 % contours and the coincident loci
  (a static PNG drawn with ligo.skymap's projections, ``/events/<id>/skymap.png``, always; an
  interactive Aladin Lite view with the MOC overlaid when ``aladin-lite`` is installed under
  ``static/vendor/aladin-lite/``), the notice revisions, and the candidate table;
* ``/api/mm/events``, ``/api/mm/events/<id>``, ``/api/mm/events/<id>/loci``,
  ``/api/mm/events/<id>/alerts`` (the outgoing alerts, every revision) and
  ``/api/mm/events/<id>/alerts/<record_number>/<kind>`` (one, exactly as published),
  ``/api/mm/events/<id>/moc/<level>.json`` (the credible region as a MOC, for Aladin and scripts),
  ``/api/mm/notices/<notice_id>``.

The pages read the store (events, notices, sky maps) and the index (event documents, the loci
listing an event) through their ports only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from broker.ports import EventQuery, LocusQuery
from web.backend import backend
from web.errors import bad_request, not_found
from web.params import int_arg
from web.serialize import clean

bp = Blueprint("events", __name__, template_folder="templates")

MAX_CANDIDATES = 1000
ALADIN = Path(__file__).resolve().parent / "static" / "vendor" / "aladin-lite" / "aladin.js"


def _localizations():
    from broker.multimessenger.coincidence import LocalizationCache

    ext = current_app.extensions
    if "albireo.localizations" not in ext:
        ext["albireo.localizations"] = LocalizationCache(backend().store, size=16)
    return ext["albireo.localizations"]


def _event(event_id: str) -> dict[str, Any]:
    ev = backend().store.event(event_id)
    if ev is None:
        raise not_found(f"no multi-messenger event {event_id!r}")
    return ev


def _candidates(event_id: str, limit: int = MAX_CANDIDATES) -> tuple[list[dict[str, Any]], int]:
    """The loci listing the event, each with its best contour level and area (from the store)."""
    b = backend()
    res = b.index.search(LocusQuery(events=[event_id], limit=limit, sort="locus_id"))
    loci = b.store.load_loci([h["locus_id"] for h in res.hits], with_alerts=False)
    out = []
    for h in res.hits:
        x = loci.get(h["locus_id"])
        entries = []
        if x is not None:
            for rows in (x.alert_grav_wave_events, x.alert_neutrino_events):
                for aid, evs in rows.items():
                    entries += [dict(e, alert_id=aid) for e in evs
                                if e.get("gracedb_id", e.get("event_id")) == event_id]
        best = min(entries, key=lambda e: e["contour_level"]) if entries else {}
        props = h.get("properties") or {}
        out.append({"locus_id": h["locus_id"], "ra": h["ra"], "dec": h["dec"], "num_alerts": h.get("num_alerts"),
                    "tags": h.get("tags") or [], "ztf_object_id": h.get("ztf_object_id"),
                    "newest_alert_observation_time": props.get("newest_alert_observation_time"),
                    "contour_level": best.get("contour_level"), "contour_area": best.get("contour_area"),
                    "alert_id": best.get("alert_id"), "alerts_inside": len(entries)})
    out.sort(key=lambda c: (c["contour_level"] if c["contour_level"] is not None else 101, c["locus_id"]))
    return out, res.total


def _notice_rows(event: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for i, n in enumerate(backend().store.notices(event["event_id"])):
        loc = n.get("localization") or {}
        rows.append({"version": i + 1, "notice_id": n["notice_id"], "created": n["created"], "kind": n["kind"],
                     "revision": n["revision"], "format": n["format"], "test": n.get("test"),
                     "shape": loc.get("shape"), "current": n["notice_id"] == event.get("current_notice_id"),
                     "localization_current": n["notice_id"] == event.get("localization_notice_id"),
                     "skymap_error": (n.get("metadata") or {}).get("skymap_error")})
    return rows


#: how each kind of outgoing alert is served (``multimessenger.outgoing``).
ALERT_KINDS = {"neutrino": "application/json", "optical": "application/json", "voevent": "application/xml",
               "circular": "text/plain"}


def _alert_text(kind: str, doc: Any) -> str:
    import json

    return json.dumps(doc, indent=2) if isinstance(doc, dict) else str(doc)


def _alerts(event_id: str) -> list[dict[str, Any]]:
    """The event's outgoing-alert revisions, newest first, each kind as the text that was published."""
    out = []
    for rec in reversed(backend().store.outgoing(event_id)):
        out.append({"record_number": rec["record_number"], "alert_type": rec["alert_type"],
                    "alert_datetime": rec["alert_datetime"], "candidates": rec.get("candidates"),
                    "kinds": {k: _alert_text(k, rec[k]) for k in ALERT_KINDS if rec.get(k) is not None}})
    return out


def _event_json(event: dict[str, Any], n_candidates: int) -> dict[str, Any]:
    summary = event.get("summary") or {}
    return clean({"event_id": event["event_id"], "name": event.get("name"), "messenger": event.get("messenger"),
                  "mission": event.get("mission"), "status": event.get("status"), "test": event.get("test"),
                  "event_time": event.get("event_time"), "event_mjd": event.get("event_mjd"),
                  "current_kind": event.get("current_kind"), "notices": event.get("notices"),
                  "localization": event.get("localization"), "areas": summary.get("areas"),
                  "center": summary.get("center"), "window_days": event.get("window_days"),
                  "metadata": event.get("metadata"), "candidates": n_candidates})


# ---- pages --------------------------------------------------------------------------------------
@bp.get("/events")
def event_list():
    b = backend()
    messenger = request.args.get("messenger") or None
    res = b.index.search_events(EventQuery(messenger=messenger, limit=int_arg(request.args, "limit", 200, 1, 1000)))
    counts = b.index.summary().events
    return render_template("events.html", events=res.hits, total=res.total, counts=counts, messenger=messenger)


@bp.get("/events/<event_id>")
def event_page(event_id: str):
    """The event's page, and its catalog landing page: the schema.org Dataset is embedded (JSON-LD)."""
    from web.catalog import event_summary, jsonld_for, reconstruction_links

    ev = _event(event_id)
    candidates, total = _candidates(event_id)
    loc = _localizations().get(ev) if ev.get("status") == "active" else None
    from web.scans import scans_for_event

    version = request.args.get("version") or None
    return render_template("event.html", event=ev, notices=_notice_rows(ev), candidates=candidates, alerts=_alerts(event_id),
                           scans=scans_for_event(event_id),
                           n_candidates=total, has_map=loc is not None, aladin=ALADIN.is_file(),
                           summary=ev.get("summary") or {}, meta=ev.get("metadata") or {},
                           catalog=event_summary(event_id), jsonld=clean(jsonld_for(event_id, version)),
                           reconstructions=reconstruction_links(event_id))


@bp.get("/events/<event_id>/skymap.png")
def event_skymap(event_id: str):
    from web.skyplot import render

    ev = _event(event_id)
    loc = _localizations().get(ev)
    if loc is None:
        raise not_found(f"event {event_id!r} has no localization" + (" (retracted)" if ev.get("status") ==
                                                                      "retracted" else ""))
    candidates, _ = _candidates(event_id)
    points = [(c["ra"], c["dec"], c["contour_level"] is not None and c["contour_level"] <= 90) for c in candidates]
    key = (event_id, ev.get("localization_notice_id"), tuple(sorted(c["locus_id"] for c in candidates)))
    png = render(loc, points, ev.get("name") or event_id, cache_key=key)
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-cache"})


# ---- JSON ---------------------------------------------------------------------------------------
@bp.get("/api/mm/events")
def api_events():
    b = backend()
    args = request.args
    status = args.get("status") or None
    res = b.index.search_events(EventQuery(messenger=args.get("messenger") or None, status=status,
                                           include_test=args.get("include_test", "1") not in ("0", "false"),
                                           limit=int_arg(args, "limit", 100, 0, 1000)))
    counts = b.index.summary().events
    data = [dict(h, candidates=counts.get(h["event_id"], 0)) for h in res.hits]
    return jsonify({"data": clean(data), "meta": {"count": res.total}})


@bp.get("/api/mm/events/<event_id>")
def api_event(event_id: str):
    ev = _event(event_id)
    candidates, total = _candidates(event_id, limit=0)
    return jsonify({"data": {**_event_json(ev, total), "revisions": _notice_rows(ev)}})


@bp.get("/api/mm/events/<event_id>/loci")
def api_event_loci(event_id: str):
    _event(event_id)
    candidates, total = _candidates(event_id, limit=int_arg(request.args, "limit", 1000, 0, MAX_CANDIDATES))
    return jsonify({"data": clean(candidates), "meta": {"count": total}})


@bp.get("/api/mm/events/<event_id>/moc/<level>.json")
def api_event_moc(event_id: str, level: str):
    try:
        lv = float(level)
    except ValueError:
        raise bad_request(f"level {level!r}: a percentage") from None
    if not 0 < lv < 100:
        raise bad_request("level must be a percentage in (0, 100)")
    loc = _localizations().get(_event(event_id))
    if loc is None:
        raise not_found(f"event {event_id!r} has no localization")
    return Response(_moc_json(loc.moc(lv)), mimetype="application/json")


def _moc_json(moc) -> str:
    import json

    return json.dumps({str(k): [int(i) for i in v] for k, v in moc.serialize(format="json").items()})


@bp.get("/api/mm/events/<event_id>/alerts")
def api_event_alerts(event_id: str):
    """Every revision of the event's outgoing alerts (GCN JSON notices, VOEvent, circular), newest first."""
    _event(event_id)
    recs = list(reversed(backend().store.outgoing(event_id)))
    return jsonify({"data": clean(recs), "meta": {"count": len(recs)}})


@bp.get("/api/mm/events/<event_id>/alerts/<int:record_number>/<kind>")
def api_event_alert(event_id: str, record_number: int, kind: str):
    """One outgoing alert exactly as published (JSON, VOEvent XML or the plain-text circular)."""
    if kind not in ALERT_KINDS:
        raise bad_request(f"kind must be one of {', '.join(ALERT_KINDS)}")
    _event(event_id)
    rec = next((r for r in backend().store.outgoing(event_id) if r["record_number"] == record_number), None)
    if rec is None or rec.get(kind) is None:
        raise not_found(f"event {event_id!r} has no {kind} alert in revision {record_number}")
    return Response(_alert_text(kind, rec[kind]), mimetype=ALERT_KINDS[kind])


@bp.get("/api/mm/notices/<notice_id>")
def api_notice(notice_id: str):
    rec = backend().store.notice(notice_id)
    if rec is None:
        raise not_found(f"no notice {notice_id!r}")
    return jsonify({"data": clean(rec)})
