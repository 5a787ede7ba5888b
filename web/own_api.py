"""``/api``: Albireo's own API (filters, streams, watch lists, multi-messenger events, status).

Documented by the OpenAPI file at ``/api/openapi.json`` (built in :mod:`web.openapi`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from flask import Blueprint, jsonify, request

from broker.ports import LocusQuery
from web import filters_view, serialize, watchlists
from web.auth import require_user
from web.backend import backend
from web.errors import ApiError, bad_request, not_found
from web.openapi import spec
from web.params import json_object_body
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
    author = require_user().name
    code = request.form.get("code") if request.form else None
    if code is None and request.is_json:
        code = json_object_body().get("code")
    if not isinstance(code, str) or not code.strip():
        raise bad_request("field 'code' (the filter's Python source) is required")
    name = request.form.get("name") or None
    try:
        rev = filters_view.submit(backend(), code, author, name)
    except filters_view.SubmissionRefused as exc:
        raise ApiError(str(exc), 422) from exc
    return jsonify({"data": rev}), 201


def _registry():
    return filters_view.registry()


def _params() -> dict:
    """The request's fields: a JSON object, or form fields."""
    if request.is_json:
        return json_object_body()
    return request.form.to_dict()


def _limits(timeout: object = None):
    """The configured sandbox limits; a request may ask for a longer budget, up to ten times the configured one."""
    from broker.filtering.sandbox import SandboxLimits

    f = backend().cfg.filters
    try:
        t = min(float(timeout), f.timeout_s * 10) if timeout not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise bad_request(f"timeout must be a number of seconds, not {timeout!r}") from exc
    return SandboxLimits.from_config(f, t)


def _report(rep: dict) -> dict:
    """A test/replay report as plain JSON (timestamps and the like as strings, as ``--json`` prints them)."""
    return json.loads(json.dumps(rep, default=str))


@bp.post("/filters/<name>/enable")
@bp.post("/filters/<name>/disable")
def filter_set_status(name: str):
    """Enable a revision (default: the newest) or disable the enabled one: what ``albireo filter enable/disable`` does.

    An approval: admins only.
    """
    author = require_user(admin=True).name
    reg = _registry()
    status = "enabled" if request.path.endswith("/enable") else "disabled"
    p = _params()
    reason = str(p.get("reason") or f"{status} over the API by {author}")
    b = backend()
    try:
        rec = reg.set_status(b.store, name, status, revision=p.get("revision") or None, reason=reason,
                             require_review=b.cfg.filters.require_review, known=b.cfg.filters.builtin)
    except KeyError as exc:
        raise not_found(str(exc.args[0])) from exc
    except (reg.NotApproved, reg.DependencyError) as exc:  # the revision's state forbids it: a conflict
        raise ApiError(str(exc), 409) from exc
    except ValueError as exc:  # e.g. a revision that could not load cannot be enabled
        raise ApiError(str(exc), 422) from exc
    return jsonify({"data": rec})


@bp.post("/filters/<name>/approve")
@bp.post("/filters/<name>/reject")
def filter_review(name: str):
    """An operator's review of a revision (default: the newest): ``albireo filter approve/reject``.

    Admins only; the reviewer recorded is the key's user. A rejection needs ``reason``.
    """
    who = require_user(admin=True).name
    reg = _registry()
    p = _params()
    decision = "approved" if request.path.endswith("/approve") else "rejected"
    note = p.get("reason") if decision == "rejected" else p.get("note")
    if note is not None and not isinstance(note, str):
        raise bad_request("note/reason must be a string")
    revision = p.get("revision") or None
    if revision is not None and not isinstance(revision, str):
        raise bad_request("revision must be a string")
    try:
        rec = reg.review(backend().store, name, decision, who, revision, note or "")
    except KeyError as exc:
        raise not_found(str(exc.args[0])) from exc
    except ValueError as exc:  # a rejection without a reason
        raise bad_request(str(exc)) from exc
    return jsonify({"data": rec})


@bp.post("/filters/test")
def filter_test():
    """Run submitted code (sandboxed, nothing stored) on uploaded Avro packets and/or stored loci; return its report.

    Fields: ``code`` (the filter's source); ``alerts`` (Avro files, repeatable; each packet
    ingested in turn and the filter run after each, as ``albireo filter test --alerts``);
    ``locus_ids`` (stored loci, a JSON list or comma-separated; each run once); ``timeout``.
    """
    require_user()
    reg = _registry()
    p = _params()
    code = p.get("code")
    if not isinstance(code, str) or not code.strip():
        raise bad_request("field 'code' (the filter's Python source) is required")
    ids = p.get("locus_ids") or []
    if isinstance(ids, str):
        ids = [x.strip() for x in ids.split(",") if x.strip()]
    uploads = [f for f in request.files.getlist("alerts") if f and f.filename]
    if not ids and not uploads:
        raise bad_request("give 'alerts' (Avro files) or 'locus_ids' (stored loci) to test the filter on")
    if len(ids) > 1000:
        raise bad_request("at most 1000 locus_ids per test")
    b = backend()
    loci = None
    if ids:
        found = b.store.load_loci(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise not_found(f"no stored locus {', '.join(missing[:5])}")
        loci = [found[i] for i in ids]
    with tempfile.TemporaryDirectory(prefix="albireo-api-test-") as tmp:
        paths = []
        for n, f in enumerate(uploads):
            path = Path(tmp) / f"{n:04d}.avro"
            f.save(path)
            paths.append(path)
        try:
            rep = reg.test_filter(code, alerts=paths or None, loci=loci, limits=_limits(p.get("timeout")),
                                  radius_arcsec=b.cfg.association.radius_arcsec)
        except reg.FilterRejected as exc:
            raise ApiError(str(exc), 422) from exc
    return jsonify({"data": _report(rep)})


@bp.post("/filters/<name>/backfill")
def filter_replay(name: str):
    """Dry run of a registered revision over stored loci (``since``/``until``: MJD or ISO; nothing written)."""
    require_user()
    reg = _registry()
    p = _params()
    try:
        limit = int(p.get("limit") or 1000)
    except (TypeError, ValueError) as exc:
        raise bad_request("limit must be an integer") from exc
    try:
        rep = reg.backfill_filter(backend().store, name, p.get("since"), p.get("until"),
                                revision=p.get("revision") or None, limit=max(1, min(limit, 100_000)),
                                limits=_limits(p.get("timeout")))
    except KeyError as exc:
        raise not_found(str(exc.args[0])) from exc
    except ValueError as exc:  # an unreadable since/until
        raise bad_request(str(exc)) from exc
    return jsonify({"data": _report(rep)})


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
    author = require_user().name
    try:
        wl = watchlists.create(backend().cfg.web.data_dir, json_object_body(required=True), author)
    except watchlists.WatchListError as exc:
        raise bad_request(str(exc)) from exc
    return jsonify({"data": wl}), 201


@bp.delete("/watchlists/<wl_id>")
def watchlist_delete(wl_id: str):
    """Its author or an admin may delete a watch list."""
    who = require_user()
    data_dir = backend().cfg.web.data_dir
    wl = watchlists.load(data_dir).get(wl_id)
    if wl is None:
        raise not_found(f"watch list {wl_id!r} not found")
    if wl.get("author") != who.name and not who.is_admin:
        raise ApiError(f"watch list {wl_id!r} belongs to {wl.get('author')!r}; only they or an admin may delete it", 403)
    if not watchlists.delete(data_dir, wl_id):
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


@bp.get("/watchlists/<wl_id>/events")
def watchlist_events(wl_id: str):
    """What ``albireo watch notify`` recorded for this list: each locus that entered it, and whether it was sent."""
    from web.watch_notify import WatchEvents

    data_dir = backend().cfg.web.data_dir
    if watchlists.load(data_dir).get(wl_id) is None:
        raise not_found(f"watch list {wl_id!r} not found")
    events = WatchEvents(data_dir)
    try:
        out = events.list(wl_id)
    finally:
        events.close()
    return jsonify({"data": out, "meta": {"count": len(out)}})


# /api/mm/... (multi-messenger events) lives in web/events.py.
