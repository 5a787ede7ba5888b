"""Portal pages: home, search, locus, filters, streams. Every page has a JSON twin in ``/v2`` or ``/api``."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from broker.adapters.search.sky import parse_location
from broker.locus import mjd_to_datetime
from broker.ports import LocusQuery, QueryError
from web import export, filters_view, gw, serialize
from web.auth import require_user
from web.backend import backend, stored_cutout
from web.charts import chart_data
from web.cutouts import KINDS, CutoutError, cached_png
from web.errors import ApiError, bad_request, not_found
from web.params import decode_cursor, encode_cursor, int_arg
from web.resolve import resolve_name
from web.searching import run
from web.stats import statistics
from web.streams_view import streams

bp = Blueprint("portal", __name__, static_folder="static", template_folder="templates",
               static_url_path="/static")

RANGE_ROWS = 3


@bp.app_template_filter("mjd_date")
def mjd_date(mjd: Any) -> str:
    try:
        return mjd_to_datetime(float(mjd)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError):
        return ""


@bp.app_template_filter("unix_date")
def unix_date(t: Any) -> str:
    import datetime

    try:
        return datetime.datetime.fromtimestamp(float(t), datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError):
        return ""


@bp.app_template_filter("fmt")
def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


@bp.get("/")
def home():
    b = backend()
    counts, _ = b.alert_rate()
    stats = statistics(b.index)
    recent = b.index.search(LocusQuery(limit=200)).hits
    interesting = [h for h in recent if h.get("tags")][:12] or recent[:12]
    return render_template("home.html", counts=counts, stats=stats, loci=interesting)


# ---- search -----------------------------------------------------------------------------------
def _search_query(args: Any) -> tuple[LocusQuery, dict[str, Any]]:
    """Form fields → a structured query, plus what to echo back to the page."""
    q = LocusQuery()
    info: dict[str, Any] = {}
    target = (args.get("q") or "").strip()
    radius_arcsec = 10.0
    if args.get("radius"):
        try:
            radius_arcsec = float(args["radius"])
        except ValueError:
            raise bad_request(f"radius {args['radius']!r}: a number of arcseconds") from None
        if not 0 < radius_arcsec <= 3600:
            raise bad_request("radius must be in (0, 3600] arcseconds")
    if target:
        b = backend()
        if re.match(r"^(ALB|ANT)\w+$", target):
            q.terms["locus_id"] = target
            info["resolved"] = f"locus id {target}"
        elif re.match(r"^ZTF\d{2}[a-z]{7}$", target):
            q.terms["ztf_object_id"] = target
            info["resolved"] = f"ZTF object {target}"
        else:
            pos = None
            try:
                pos = parse_location(target)
                info["resolved"] = f"position RA {pos[0]:.6f}°, Dec {pos[1]:+.6f}°"
            except QueryError:
                hit = resolve_name(b.catalogs, target)
                if hit is None:
                    raise bad_request(f"{target!r} is neither coordinates (decimal or sexagesimal) nor a "
                                      "name our catalogs know (NGC/IC/Messier/common names)") from None
                pos = hit[:2]
                info["resolved"] = f"{hit[3]} ({hit[2]}): RA {pos[0]:.6f}°, Dec {pos[1]:+.6f}°"
            q.cone = (pos[0], pos[1], radius_arcsec / 3600.0)
    tags = [t for t in re.split(r"[\s,]+", args.get("tags", "")) if t]
    q.tags = tags
    for i in range(RANGE_ROWS):
        name = (args.get(f"prop{i}") or "").strip()
        if not name:
            continue
        lo_raw, hi_raw = args.get(f"min{i}", ""), args.get(f"max{i}", "")
        try:
            lo = float(lo_raw) if lo_raw.strip() else None
            hi = float(hi_raw) if hi_raw.strip() else None
        except ValueError:
            raise bad_request(f"range for {name!r}: bounds must be numbers") from None
        q.ranges[name] = (lo, hi)
    return q, info


@bp.get("/search")
def search():
    args = request.args
    fmt_ = args.get("format", "html")
    if fmt_ not in ("html", "csv", "votable", "json"):
        raise bad_request(f"format {fmt_!r}: html, csv, votable or json")
    limit = int_arg(args, "limit", 1000 if fmt_ in ("csv", "votable") else 25, 1, 1000)
    sort = args.get("sort") or "-newest_alert_observation_time"
    searched = any(args.get(k) for k in ("q", "tags", "prop0", "prop1", "prop2", "all"))
    result, info = None, {}
    if searched or fmt_ != "html":
        q, info = _search_query(args)
        result = run(backend(), q, sort, limit, decode_cursor(args.get("cursor")))
    if fmt_ == "csv":
        return Response(export.to_csv(result.hits), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="albireo-loci.csv"'})
    if fmt_ == "votable":
        return Response(export.to_votable(result.hits), mimetype="application/x-votable+xml",
                        headers={"Content-Disposition": 'attachment; filename="albireo-loci.vot"'})
    if fmt_ == "json":
        return {"data": [serialize.locus_hit(h)["locus"] for h in result.hits], "meta": {"count": result.total}}
    base = {k: v for k, v in args.items() if k not in ("cursor", "format")}
    next_url = None
    if result is not None and result.next_cursor is not None:
        next_url = url_for("portal.search", **base, cursor=encode_cursor(result.next_cursor))
    export_urls = {f: url_for("portal.search", **base, format=f) for f in ("csv", "votable", "json")}
    tags = sorted(statistics(backend().index)["tags"])
    return render_template("search.html", result=result, info=info, args=args, next_url=next_url,
                           export_urls=export_urls, range_rows=RANGE_ROWS, known_tags=tags,
                           first_page=not args.get("cursor"))


# ---- locus ------------------------------------------------------------------------------------
@bp.get("/loci/<locus_id>")
def locus(locus_id: str):
    b = backend()
    loc = b.locus(locus_id)
    if loc is None:
        raise not_found(f"locus {locus_id!r} not found")
    newest_with_stamps = None
    for a in reversed(loc.alerts):
        if not a.is_history:
            stamps = b.store.cutouts(a.alert_id)
            if stamps:
                newest_with_stamps = (a, [k for k in KINDS if k in stamps])
                break
    matches = [serialize.catalog_match_json(c, r) for c, rows in sorted(loc.catalog_objects.items()) for r in rows]
    provenance = {k: vars(v) for k, v in loc.provenance.items()}
    return render_template(
        "locus.html", locus=loc, chart=chart_data(loc.alerts), matches=matches, provenance=provenance,
        stamps=newest_with_stamps, coincidences=gw.coincidences(b, loc),
        internal=loc.internal_properties, user=loc.user_properties,
        alerts=list(reversed(loc.alerts)),
    )


@bp.get("/cutouts/<alert_id>/<kind>.png")
def cutout_png(alert_id: str, kind: str):
    data = stored_cutout(alert_id, kind)
    try:
        png = cached_png(alert_id, kind, data)
    except CutoutError as exc:
        raise ApiError(f"cutout {kind} of {alert_id}: {exc}", 422) from exc
    return Response(png, mimetype="image/png", headers={"Cache-Control": "public, max-age=86400"})


# ---- filters and streams ----------------------------------------------------------------------
@bp.get("/filters")
def filters():
    items, source = filters_view.list_filters(backend())
    return render_template("filters.html", filters=items, source=source,
                           can_submit=True, message=request.args.get("message"))


@bp.get("/filters/<name>")
def filter_page(name: str):
    f = filters_view.get_filter(backend(), name)
    if f is None:
        raise not_found(f"filter {name!r} not found")
    return render_template("filter.html", f=f)


@bp.post("/filters")
def filter_submit():
    author = require_user().name
    code = request.form.get("code", "")
    if not code.strip():
        raise bad_request("the filter's Python source is empty")
    try:
        rev = filters_view.submit(backend(), code, author, request.form.get("name") or None)
    except filters_view.SubmissionRefused as exc:
        return render_template("filters.html", filters=filters_view.list_filters(backend())[0],
                               source="", can_submit=True,
                               message=f"Submission refused: {exc}", code=code), 422
    name = rev.get("name") or rev.get("filter") or ""
    return redirect(url_for("portal.filters", message=f"Submitted {name} revision {rev.get('revision', '')}"))


@bp.get("/watchlists")
def watchlists_page():
    """Every watch list, where it notifies, and what ``albireo watch notify`` recorded and sent for it."""
    from web import watchlists
    from web.watch_notify import WatchEvents

    data_dir = backend().cfg.web.data_dir
    lists = list(watchlists.load(data_dir).values())
    events = WatchEvents(data_dir)
    try:
        for wl in lists:
            wl["events"] = events.list(wl["id"])
    finally:
        events.close()
    return render_template("watchlists.html", lists=lists)


@bp.get("/streams")
def stream_page():
    return render_template("streams.html", streams=streams(backend()), api_base=request.host_url + "v2/")
