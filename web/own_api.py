"""``/api``: Albireo's own API (filters, streams, watch lists, multi-messenger events, status).

Documented by the OpenAPI file at ``/api/openapi.json`` (built in :mod:`web.openapi`).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from broker.search.base import LocusQuery
from web import filters_view, gw, serialize, watchlists
from web.auth import require_token
from web.backend import backend
from web.errors import ApiError, bad_request, not_found
from web.openapi import spec
from web.stats import statistics
from web.streams_view import streams

bp = Blueprint("own", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec(request.host_url.rstrip("/")))


@bp.get("/status")
def status():
    b = backend()
    counts, rate = b.alert_rate()
    return jsonify({"counts": counts, "alerts_per_second": rate, "index": statistics(b.index),
                    "store_backend": b.cfg.store.backend, "search_backend": b.cfg.search.backend})


@bp.get("/filters")
def filters():
    items, source = filters_view.list_filters(backend())
    return jsonify({"data": items, "meta": {"source": source, "count": len(items)}})


@bp.get("/filters/<name>")
def filter_detail(name: str):
    f = filters_view.get_filter(backend(), name)
    if f is None:
        raise not_found(f"filter {name!r} not found")
    return jsonify({"data": f})


@bp.post("/filters")
def filter_submit():
    author = require_token()
    code = request.form.get("code") if request.form else None
    if code is None and request.is_json:
        code = (request.get_json(silent=True) or {}).get("code")
    if not code or not code.strip():
        raise bad_request("field 'code' (the filter's Python source) is required")
    name = request.form.get("name") or None
    try:
        rev = filters_view.submit(backend(), code, author, name)
    except filters_view.SubmissionRefused as exc:
        raise ApiError(str(exc), 422) from exc
    return jsonify({"data": rev}), 201


@bp.get("/streams")
def stream_list():
    items = streams(backend())
    return jsonify({"data": items, "meta": {"count": len(items)}})


@bp.get("/watchlists")
def watchlist_list():
    lists = watchlists.load(backend().cfg.web.data_dir)
    return jsonify({"data": list(lists.values()), "meta": {"count": len(lists)}})


@bp.post("/watchlists")
def watchlist_create():
    author = require_token()
    try:
        wl = watchlists.create(backend().cfg.web.data_dir, request.get_json(silent=True), author)
    except watchlists.WatchListError as exc:
        raise bad_request(str(exc)) from exc
    return jsonify({"data": wl}), 201


@bp.delete("/watchlists/<wl_id>")
def watchlist_delete(wl_id: str):
    require_token()
    if not watchlists.delete(backend().cfg.web.data_dir, wl_id):
        raise not_found(f"watch list {wl_id!r} not found")
    return "", 204


@bp.get("/watchlists/<wl_id>/loci")
def watchlist_loci(wl_id: str):
    b = backend()
    wl = watchlists.load(b.cfg.web.data_dir).get(wl_id)
    if wl is None:
        raise not_found(f"watch list {wl_id!r} not found")
    out = []
    for obj in wl["objects"]:
        res = b.index.search(LocusQuery(cone=(obj["ra"], obj["dec"], obj["radius_arcsec"] / 3600), limit=100))
        for h in res.hits:
            out.append({"label": obj["label"], **serialize.locus_hit(h)["locus"]})
    return jsonify({"data": out, "meta": {"count": len(out)}})


@bp.get("/mm/events")
def mm_events():
    """Multi-messenger events that touch at least one locus, with how many loci each touches."""
    b = backend()
    index = b.index
    events: dict[str, int] = {}
    if type(index).__name__ == "SQLiteIndex":
        with index._lock:  # noqa: SLF001
            events = dict(index._db.execute(
                "SELECT j.value, COUNT(*) FROM docs, json_each(docs.doc, '$.grav_wave_events') AS j "
                "GROUP BY j.value ORDER BY j.value"))
    out = [{"gracedb_id": k, "loci": v, "notice": gw.latest(b, k)} for k, v in events.items()]
    return jsonify({"data": out, "meta": {"count": len(out)}})


@bp.get("/mm/events/<gracedb_id>")
def mm_event(gracedb_id: str):
    b = backend()
    notice = gw.latest(b, gracedb_id)
    if notice is None:
        raise not_found(f"no multi-messenger event {gracedb_id!r}")
    return jsonify({"data": {"gracedb_id": gracedb_id, "notice": notice,
                             "loci": gw._locus_ids_with_event(b, gracedb_id, limit=1000)}})  # noqa: SLF001
