"""``/v2``: the ANTARES-compatible API, shaped for ``antares-client`` (JSON:API envelopes).

Every response is ``{"data": ..., "meta": ..., "links": {"self": ..., "next": ...}}``. ``GET /v2/loci``
pages with an opaque ``page[cursor]`` carried in ``links.next`` (an absolute URL holding every
parameter: the client follows it as is). See ``docs/portal-api.md`` for the field list.
"""

from __future__ import annotations

import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from broker.locus import Locus
from web import gw, serialize
from web.backend import backend, stored_cutout
from web.cutouts import KINDS
from web.errors import bad_request, not_found
from web.params import decode_cursor, encode_cursor, int_arg, json_arg, parse_float
from web.searching import query_from_body, run
from web.stats import statistics

bp = Blueprint("api", __name__, url_prefix="/v2")

MAX_PAGE = 1000


def envelope(data: Any, meta: dict[str, Any] | None = None, next_url: str | None = None) -> Response:
    return jsonify({"data": data, "meta": meta or {}, "links": {"self": request.url, "next": next_url}})


def load_locus(locus_id: str, with_alerts: bool = True) -> Locus:
    locus = backend().locus(locus_id, with_alerts=with_alerts)
    if locus is None:
        raise not_found(f"locus {locus_id!r} not found")
    return locus


@bp.get("/")
def root():
    return envelope({"type": "api", "id": "v2", "name": "Albireo ANTARES-compatible API",
                     "openapi": url_for("own.openapi", _external=True)})


@bp.get("/loci")
def loci():
    args = request.args
    limit = int_arg(args, "limit", 10, 0, MAX_PAGE)
    body = json_arg(args, "elasticsearch_query")
    cursor = decode_cursor(args.get("page[cursor]"))
    b = backend()
    result = run(b, query_from_body(b, body), args.get("sort"), limit, cursor)
    next_url = None
    if result.next_cursor is not None:
        params = {k: v for k, v in args.items() if k != "page[cursor]"}
        params["page[cursor]"] = encode_cursor(result.next_cursor)
        next_url = url_for("api.loci", _external=True, **params)
    return envelope([serialize.locus_hit(h) for h in result.hits], {"count": result.total}, next_url)


@bp.get("/loci/statistics")
def loci_statistics():
    s = statistics(backend().index)
    return envelope({"type": "locus_statistics", "id": "locus_statistics", **s})


@bp.get("/loci/random")
def loci_random():
    """``n`` locus ids drawn at random from the whole index (``seed`` repeats a draw)."""
    n = int_arg(request.args, "n", 1, 1, MAX_PAGE)
    seed = int_arg(request.args, "seed", -1, 0, 2**31 - 1) if "seed" in request.args else None
    ids = backend().index.random_ids(n, seed)
    return envelope([{"type": "locus", "id": i} for i in ids], {"count": len(ids)})


@bp.get("/loci/<locus_id>")
def locus(locus_id: str):
    return envelope(serialize.locus_detail(load_locus(locus_id)))


@bp.get("/loci/<locus_id>/alerts")
def locus_alerts(locus_id: str):
    # the alerts with the locus record, so each carries its grav_wave_events (kept on the locus)
    alerts = load_locus(locus_id).alerts
    return envelope([serialize.alert_json(a) for a in alerts], {"count": len(alerts)})


@bp.get("/loci/<locus_id>/catalog-matches")
def locus_catalog_matches(locus_id: str):
    locus = load_locus(locus_id, with_alerts=False)
    out = [serialize.catalog_match_json(cat, row) for cat, rows in sorted(locus.catalog_objects.items())
           for row in rows]
    return envelope(out, {"count": len(out)})


@bp.get("/alerts/<alert_id>/thumbnails")
def alert_thumbnails(alert_id: str):
    stamps = backend().store.cutouts(alert_id)
    out = []
    for kind in KINDS:
        if kind not in stamps:
            continue
        gz = stamps[kind][:2] == b"\x1f\x8b"
        out.append({"type": "alert_thumbnail", "id": f"{alert_id}_{kind}", "thumbnail_type": kind,
                    "filemime": "application/fits+gzip" if gz else "application/fits",
                    "src": url_for("api.alert_blob", alert_id=alert_id, kind=kind, _external=True),
                    "png": url_for("portal.cutout_png", alert_id=alert_id, kind=kind, _external=True)})
    return envelope(out, {"count": len(out)})


@bp.get("/alerts/<alert_id>/cutouts/<kind>")
def alert_blob(alert_id: str, kind: str):
    data = stored_cutout(alert_id, kind)
    gz = data[:2] == b"\x1f\x8b"
    name = f"{alert_id}_{kind}.fits" + (".gz" if gz else "")
    return Response(data, mimetype="application/gzip" if gz else "application/fits",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _position(ra: str, dec: str) -> tuple[float, float]:
    r, d = parse_float(ra, "ra"), parse_float(dec, "dec")
    if not (0.0 <= r <= 360.0 and -90.0 <= d <= 90.0):
        raise bad_request("ra must be in [0, 360] and dec in [-90, 90] degrees")
    return r, d


@bp.get("/catalog_search/<ra>/<dec>")
def catalog_search(ra: str, dec: str):
    import numpy as np

    r, d = _position(ra, dec)
    cats = backend().catalogs
    out: list[dict[str, Any]] = []
    if cats is not None:
        for name, rows in sorted(cats.match(np.array([r]), np.array([d]))[0].items()):
            out.extend(serialize.catalog_sample_json(name, row) for row in rows)
    return envelope(out, {"count": len(out)})


@bp.get("/catalog_samples")
def catalog_samples():
    import numpy as np

    n = int_arg(request.args, "n", 5, 1, 50)
    cats = backend().catalogs
    out: list[dict[str, Any]] = []
    for ix in getattr(cats, "indexes", []):
        # deterministic: evenly spaced rows across the catalog, not the first n (all in one sky corner)
        rows = ix.rows(np.linspace(0, ix.n_rows - 1, num=min(n, ix.n_rows)).astype(np.int64))
        out.extend(serialize.catalog_sample_json(ix.name, row) for row in rows)
    return envelope(out, {"count": len(out)})


# ---- gravitational-wave notices ----------------------------------------------------------------
@bp.get("/grav_wave_notice/latest")
def grav_wave_notices_latest():
    ids = request.args.getlist("ids")
    if not ids:
        raise bad_request("parameter 'ids' is required (repeat it for several GraceDB ids)")
    out = [n for n in (gw.latest(backend(), i) for i in ids) if n is not None]
    return envelope(out, {"count": len(out)})


@bp.get("/grav_wave_notice/<gracedb_id>/latest")
def grav_wave_notice_latest(gracedb_id: str):
    notice = gw.latest(backend(), gracedb_id)
    if notice is None:
        raise not_found(f"no notice for {gracedb_id!r}")
    return envelope(notice)


@bp.get("/grav_wave_notice/<gracedb_id>/<notice_datetime>")
def grav_wave_notice(gracedb_id: str, notice_datetime: str):
    try:
        when = datetime.datetime.fromisoformat(notice_datetime)
    except ValueError:
        raise bad_request(f"notice_datetime {notice_datetime!r}: expected ISO 8601") from None
    notice = gw.at(backend(), gracedb_id, when)
    if notice is None:
        raise not_found(f"no notice for {gracedb_id!r} at {notice_datetime}")
    return envelope(notice)
