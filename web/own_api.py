"""``/api``: Albireo's own API (filters, streams, watch lists, multi-messenger events, status).

Documented by the OpenAPI file at ``/api/openapi.json`` (built in :mod:`web.openapi`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from flask import Blueprint, jsonify, request

from broker.ports import DeliveryError, LocusQuery
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


def _flag(p: dict, key: str) -> bool:
    v = p.get(key)
    if isinstance(v, bool):
        return v
    if v in (None, "", "0", "false", "no", "off"):
        return False
    if v in ("1", "true", "yes", "on"):
        return True
    raise bad_request(f"{key} must be true or false, not {v!r}")


def _str_field(p: dict, key: str) -> str | None:
    v = p.get(key)
    if v in (None, ""):
        return None
    if not isinstance(v, str):
        raise bad_request(f"{key} must be a string")
    return v


@bp.post("/filters/<name>/backfill")
def filter_replay(name: str):
    """Run a registered revision over stored loci: what ``albireo filter backfill`` does.

    Fields: ``since``/``until`` (MJD or ISO), ``revision``, ``limit`` (default 1000, at most
    100000), ``timeout``; ``compare`` (``[REV_A, REV_B]``) or ``against`` (REV): a comparison;
    ``write``: write tags and properties (store + index) with provenance; ``publish``: also
    publish to the streams (Kafka); ``resume``: a run id. A dry run or comparison needs a user key;
    writing, publishing or resuming an admin key.
    """
    p = _params()
    write, publish, resume = _flag(p, "write"), _flag(p, "publish"), _str_field(p, "resume")
    compare, against = p.get("compare"), _str_field(p, "against")
    require_user(admin=write or publish or bool(resume))
    reg = _registry()
    try:
        limit = int(p.get("limit") or 1000)
    except (TypeError, ValueError) as exc:
        raise bad_request("limit must be an integer") from exc
    limit = max(1, min(limit, 100_000))
    if compare is not None and (not isinstance(compare, list) or len(compare) != 2
                                or not all(isinstance(x, str) and x for x in compare)):
        raise bad_request("compare must be a list of two revisions [REV_A, REV_B]")
    if (compare or against) and (write or publish or resume):
        raise bad_request("a comparison writes nothing: compare/against cannot go with write, publish or resume")
    if publish and not (write or resume):
        raise bad_request("publish needs write (a dry run publishes nothing)")
    b = backend()
    revision = _str_field(p, "revision")
    try:
        if compare or against:
            a, bb = compare if compare else (against, revision or reg.get_filter(b.store, name)["revisions"][-1]["revision"])
            rep = reg.compare_revisions(b.store, name, a, bb, p.get("since"), p.get("until"), limit=limit,
                                        limits=_limits(p.get("timeout")))
        elif write or resume:
            rep = _write_backfill(b, reg, name, p, revision, limit, publish, resume)
        else:
            rep = reg.backfill_filter(b.store, name, p.get("since"), p.get("until"), revision=revision, limit=limit,
                                      limits=_limits(p.get("timeout")))
    except KeyError as exc:
        raise not_found(str(exc.args[0])) from exc
    except ValueError as exc:  # an unreadable since/until, a run of another filter
        raise bad_request(str(exc)) from exc
    return jsonify({"data": _report(rep)})


def _write_backfill(b, reg, name: str, p: dict, revision: str | None, limit: int, publish: bool,
                    resume: str | None) -> dict:
    """A writing run through the pipeline's index writer and, to publish, the configured Kafka sink."""
    from broker.assemble import open_index_writer, open_stream_sink, stream_router

    if resume and not publish:
        prior = b.store.get_backfill_run(resume)
        publish = bool(prior and prior.get("publish"))
    try:
        sink = open_stream_sink(b.cfg) if publish else None
    except Exception as exc:  # Kafka unreachable or refused: the caller learns why
        raise ApiError(f"cannot publish: {exc}", 502) from exc
    writer = open_index_writer(b.cfg, b.index)
    started: dict = {}
    try:
        return reg.run_backfill(b.store, name, revision, p.get("since"), p.get("until"), limit=limit,
                                limits=_limits(p.get("timeout")), sink=sink, router=stream_router(b.cfg),
                                index_writer=writer, resume=resume, publish_to="kafka" if publish else None,
                                on_start=started.update)
    except DeliveryError as exc:  # Kafka did not acknowledge: the run is checkpointed as interrupted
        raise ApiError(f"publishing failed; resume it with resume={started.get('run_id')!r}: {exc}", 502) from exc
    finally:
        writer.close(timeout=60)
        if sink is not None:
            sink.close()


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
