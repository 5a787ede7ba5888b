"""The FAIR event catalog over HTTP: a versioned REST API, exports, Simple Cone Search, metadata, sky maps.

* ``/catalog`` — the portal page: published versions, their exports and metadata;
* ``/api/catalog/v1`` — what the catalog is (licence, identifier scheme, links);
* ``/api/catalog/v1/versions`` — the published versions; ``/versions/<v>`` one (``<v>``: a number,
  ``latest``, or ``live`` for the unpublished current state) with its records;
  ``/versions/<v>/<table>.<fmt>`` its ``events`` or ``associations`` table as FITS, VOTable
  (``vot``), CSV, ECSV, Parquet or JSON;
* ``/versions/<v>/datacite.json``, ``/versions/<v>/jsonld`` — a published version's DataCite and
  schema.org records (where a catalog DOI is minted from);
* ``/api/catalog/v1/events/<id>`` — an event's record (``?version=<n>|live``), its versions and
  links; ``/associations``; ``/<table>.<fmt>``; ``/datacite.json``; ``/jsonld``;
  ``/skymap.multiorder.fits``;
* ``/api/catalog/v1/resolve/<identifier>`` — a persistent identifier to its page (302);
* ``/api/catalog/scs?RA=&DEC=&SR=`` — IVOA Simple Cone Search 1.03 (VOTable) over the latest
  published version (``release=<n>|live`` for another).

Everything reads the store and index through their ports (:class:`~broker.multimessenger.catalog.versions.EventCatalog`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, redirect, request

from broker.multimessenger.catalog.exports import FORMATS, TABLES, export, release_meta
from broker.multimessenger.catalog.versions import CatalogSettings, EventCatalog
from web.backend import backend
from web.errors import ApiError, bad_request, not_found
from web.serialize import clean

bp = Blueprint("catalog", __name__, template_folder="templates")


def catalog() -> EventCatalog:
    ext = current_app.extensions
    if "albireo.event_catalog" not in ext:
        b = backend()
        ext["albireo.event_catalog"] = EventCatalog(b.store, b.index, CatalogSettings.from_config(b.cfg))
    return ext["albireo.event_catalog"]


def base_url() -> str:
    return catalog().settings.base_url or request.host_url.rstrip("/")


def _license_headers(meta: dict[str, Any]) -> dict[str, str]:
    h = {"Link": f'<{meta["license_url"]}>; rel="license"', "X-Albireo-License": meta["license"],
         "X-Albireo-Catalog-Version": str(meta["catalog_version"])}
    if meta.get("catalog_pid"):
        h["X-Albireo-Catalog-Pid"] = meta["catalog_pid"]
    return h


def _release_arg(text: str | None, *, default_live: bool) -> dict[str, Any] | None:
    """A published version by ``<n>`` / ``latest``; None for ``live`` (or, when nothing is published, the default)."""
    cat = catalog()
    if text in (None, "", "latest"):
        rel = cat.latest_release()
        if rel is None and not default_live and text == "latest":
            raise not_found("no catalog version has been published yet (albireo release publish)")
        return rel
    if text == "live":
        return None
    try:
        n = int(text)
    except ValueError:
        raise bad_request(f"version {str(text)[:20]!r}: a number, 'latest' or 'live'") from None
    rel = cat.release(n)
    if rel is None:
        raise not_found(f"no catalog version {n}")
    return rel


def _records(release: dict[str, Any] | None) -> list[dict[str, Any]]:
    cat = catalog()
    return cat.release_records(release) if release is not None else cat.live_records()


def _release_summary(rel: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rel.items() if k != "members"} | {"url": f"{base_url()}/api/catalog/v1/versions/{rel['version']}"}


def _send(data: bytes, fmt: str, name: str, meta: dict[str, Any]) -> Response:
    mime, ext = FORMATS[fmt]
    headers = _license_headers(meta) | {"Content-Disposition": f'attachment; filename="{name}.{ext}"'}
    return Response(data, mimetype=mime, headers=headers)


def _table_fmt(table: str, fmt: str) -> None:
    if table not in TABLES:
        raise not_found(f"no table {table[:40]!r}: {', '.join(TABLES)}")
    if fmt not in FORMATS:
        raise bad_request(f"format {fmt[:20]!r}: one of {', '.join(FORMATS)}")


# ---- the catalog and its versions ------------------------------------------------------------
@bp.get("/catalog")
def catalog_page():
    """The human door to the catalog: its published versions with their exports and metadata."""
    from flask import render_template

    return render_template("catalog.html", settings=catalog().settings, releases=catalog().releases(),
                           scs=f"{base_url()}/api/catalog/scs?RA=&DEC=&SR=")



@bp.get("/api/catalog/v1")
def root():
    s = catalog().settings
    base = base_url()
    rel = catalog().latest_release()
    return jsonify({"data": {
        "title": s.title, "creator": s.creator, "publisher": s.publisher, "license": s.license,
        "license_url": s.license_url, "latest_version": rel["version"] if rel else None,
        "identifier_scheme": {"event": s.ids.event("<event_id>", 1), "association": s.ids.association("<event_id>",
                                                                                                       "<locus_id>", 1),
                              "catalog_version": s.ids.release(1), "doi": s.ids.doi(1), "ark": s.ids.ark(s.ids.release(1))},
        "links": {"versions": f"{base}/api/catalog/v1/versions", "live": f"{base}/api/catalog/v1/versions/live",
                  "cone_search": f"{base}/api/catalog/scs", "resolve": f"{base}/api/catalog/v1/resolve/<identifier>",
                  "docs": "docs/catalog.md"}}})


@bp.get("/api/catalog/v1/versions")
def versions():
    rels = [_release_summary(r) for r in catalog().releases()]
    return jsonify({"data": clean(rels), "meta": {"count": len(rels)}})


@bp.get("/api/catalog/v1/versions/<version>")
def version(version: str):
    rel = _release_arg(version, default_live=False)
    recs = _records(rel)
    meta = release_meta(rel, catalog().settings)
    base = base_url()
    v = rel["version"] if rel else "live"
    links = {f"{t}.{f}": f"{base}/api/catalog/v1/versions/{v}/{t}.{f}" for t in TABLES for f in FORMATS}
    head = _release_summary(rel) if rel else {"version": "live", "published": None,
                                             "note": "the current, unpublished state: not citeable"}
    return jsonify({"data": clean([{k: r[k] for k in r if k != "associations"} for r in recs]),
                    "meta": clean(head | {"count": len(recs)} | {"export": meta}), "links": links})


@bp.get("/api/catalog/v1/versions/<version>/<table>.<fmt>")
def version_export(version: str, table: str, fmt: str):
    _table_fmt(table, fmt)
    rel = _release_arg(version, default_live=False)
    meta = release_meta(rel, catalog().settings)
    data = export(_records(rel), table, fmt, meta)
    resp = _send(data, fmt, f"albireo-events-v{meta['catalog_version']}-{table}", meta)
    published = (rel or {}).get("checksums", {}).get(f"{table}.{fmt}")
    if published:  # the file as published: the client can check it, and so can we
        import hashlib

        resp.headers["X-Albireo-Published-SHA256"] = published
        resp.headers["X-Albireo-Checksum"] = "ok" if hashlib.sha256(data).hexdigest() == published else "mismatch"
    return resp


@bp.get("/api/catalog/v1/versions/<version>/datacite.json")
def version_datacite(version: str):
    from broker.multimessenger.catalog.metadata import release_datacite

    rel = _release_arg(version, default_live=False)
    if rel is None:
        raise bad_request("the live catalog is not a published version: it has no DataCite record")
    doc = release_datacite(rel, catalog().settings, base_url(), [r["version"] for r in catalog().releases()])
    return Response(json.dumps(clean(doc), indent=1), mimetype="application/vnd.datacite.datacite+json")


@bp.get("/api/catalog/v1/versions/<version>/jsonld")
def version_jsonld(version: str):
    from broker.multimessenger.catalog.metadata import release_jsonld

    rel = _release_arg(version, default_live=False)
    if rel is None:
        raise bad_request("the live catalog is not a published version: it has no Dataset record")
    return Response(json.dumps(clean(release_jsonld(rel, catalog().settings, base_url())), indent=1),
                    mimetype="application/ld+json")


# ---- one event --------------------------------------------------------------------------------
def _event_record(event_id: str, version_arg: str | None) -> tuple[dict[str, Any], bool]:
    """(the record asked for, whether it is the unpublished live state)."""
    cat = catalog()
    if cat.store.event(event_id) is None:
        raise not_found(f"no multi-messenger event {event_id[:80]!r}")
    if version_arg == "live":
        rec, changed = cat.live_record(event_id)
        return rec, changed
    if version_arg not in (None, ""):
        try:
            n = int(version_arg)
        except ValueError:
            raise bad_request(f"version {version_arg[:20]!r}: a number or 'live'") from None
        rec = cat.record(event_id, n)
        if rec is None:
            raise not_found(f"event {event_id!r} has no record version {n}")
        return rec, False
    versions = cat.record_versions(event_id)
    if versions:
        return versions[-1], False
    return cat.live_record(event_id)


def event_summary(event_id: str) -> dict[str, Any]:
    """What the landing page and the API say about an event's catalog entry."""
    cat = catalog()
    base = base_url()
    versions = cat.record_versions(event_id)
    releases = cat.releases()
    rows = [{"version": r["version"], "pid": r["pid"], "created": r["created"],
             "content_hash": r["content_hash"],
             "catalog_versions": [rel["version"] for rel in releases if [event_id, r["version"]] in rel["members"]],
             "url": f"{base}/api/catalog/v1/events/{quote(event_id, safe='')}?version={r['version']}"}
            for r in versions]
    live, changed = cat.live_record(event_id)
    from broker.multimessenger.catalog.metadata import urls

    ev = cat.store.event(event_id) or {}
    listed = cat.settings.include_test or not ev.get("test")
    return {"concept_pid": cat.settings.ids.event(event_id), "versions": rows, "live_changed": changed, "listed": listed,
            "live_version": live["version"], "links": urls(base, event_id), "license": cat.settings.license,
            "license_url": cat.settings.license_url}


def reconstruction_links(event_id: str) -> list[dict[str, str]]:
    """Links to the event's reconstruction scans: a hook, filled only when a scans blueprint is installed.

    The SkyDriver-style scans (``/api/scans``, ``/scans/<id>``) live in their own blueprint; when the
    app serves ``/scans`` the event page links the event's scans there, else it links nothing.
    """
    rules = {r.rule for r in current_app.url_map.iter_rules()}
    e = quote(event_id, safe="")
    out = []
    if "/scans" in rules:
        out.append({"label": "reconstruction scans of this event", "url": f"/scans?event={e}"})
    if "/api/scans/find" in rules:
        out.append({"label": "find its scans (POST /api/scans/find)", "url": "/api/scans/find"})
    return out


@bp.get("/api/catalog/v1/events/<event_id>")
def event(event_id: str):
    rec, live = _event_record(event_id, request.args.get("version"))
    return jsonify({"data": clean(rec), "meta": clean(event_summary(event_id) | {"unpublished": live})})


@bp.get("/api/catalog/v1/events/<event_id>/associations")
def event_associations(event_id: str):
    rec, live = _event_record(event_id, request.args.get("version"))
    return jsonify({"data": clean(rec["associations"]),
                    "meta": {"count": len(rec["associations"]), "event_pid": rec["pid"], "unpublished": live}})


@bp.get("/api/catalog/v1/events/<event_id>/<table>.<fmt>")
def event_export(event_id: str, table: str, fmt: str):
    _table_fmt(table, fmt)
    rec, live = _event_record(event_id, request.args.get("version"))
    rels = [r for r in catalog().releases() if [event_id, rec["version"]] in r["members"]] if not live else []
    meta = release_meta(rels[-1] if rels else None, catalog().settings)
    data = export([rec], table, fmt, meta)
    return _send(data, fmt, f"{quote(event_id, safe='')}-v{rec['version']}-{table}", meta)


def _metadata_inputs(event_id: str, version_arg: str | None):
    rec, _ = _event_record(event_id, version_arg)
    cat = catalog()
    by_id = {n["notice_id"]: n for n in cat.store.notices(event_id)}
    notices = [by_id[n] for n in (rec.get("provenance") or {}).get("notices", []) if n in by_id]
    return rec, cat, notices


def jsonld_for(event_id: str, version_arg: str | None = None) -> dict[str, Any]:
    from broker.multimessenger.catalog.metadata import event_jsonld

    rec, cat, notices = _metadata_inputs(event_id, version_arg)
    return event_jsonld(rec, cat.settings, base_url(), cat.releases(), notices)


@bp.get("/api/catalog/v1/events/<event_id>/jsonld")
def event_jsonld_route(event_id: str):
    doc = jsonld_for(event_id, request.args.get("version"))
    return Response(json.dumps(clean(doc), indent=1), mimetype="application/ld+json")


@bp.get("/api/catalog/v1/events/<event_id>/datacite.json")
def event_datacite(event_id: str):
    from broker.multimessenger.catalog.metadata import event_datacite as build

    rec, cat, notices = _metadata_inputs(event_id, request.args.get("version"))
    versions = [r["version"] for r in cat.record_versions(event_id)]
    doc = build(rec, cat.settings, base_url(), cat.releases(), versions, notices)
    return Response(json.dumps(clean(doc), indent=1), mimetype="application/vnd.datacite.datacite+json")


@bp.get("/api/catalog/v1/events/<event_id>/skymap.multiorder.fits")
def event_skymap(event_id: str):
    from broker.multimessenger.catalog.skymap import multiorder_fits

    rec, _ = _event_record(event_id, request.args.get("version"))
    cat = catalog()
    ev = cat.store.event(event_id)
    prov = rec.get("provenance") or {}
    if rec.get("status") == "retracted" or not prov.get("localization_notice_id"):
        raise not_found(f"event {event_id!r} (record v{rec['version']}) has no localization")
    notice = cat.store.notice(prov["localization_notice_id"])
    if notice is None or not notice.get("localization"):
        raise not_found(f"the localization notice of {event_id!r} is not stored")
    # the record version's own localization: its notice's spec (and map), whatever the event says now
    loc = cat.localization(dict(ev, localization=notice["localization"],
                                localization_notice_id=prov["localization_notice_id"], status="active"))
    if loc is None:
        raise not_found(f"event {event_id!r}: its localization cannot be built (see the event page)")
    s = cat.settings
    data = multiorder_fits(loc, {"OBJECT": event_id, "DATE-OBS": rec.get("event_time"), "ORIGIN": s.publisher,
                                 "LICENSE": s.license, "RECPID": rec["pid"], "NOTICEID": prov["localization_notice_id"],
                                 "PIPEVERS": prov.get("pipeline_version")})
    headers = _license_headers(release_meta(None, s)) | {
        "Content-Disposition": f'attachment; filename="{quote(event_id, safe="")}-v{rec["version"]}.multiorder.fits"'}
    return Response(data, mimetype="application/fits", headers=headers)


# ---- identifiers ------------------------------------------------------------------------------
@bp.get("/api/catalog/v1/resolve/<path:pid>")
def resolve(pid: str):
    try:
        p = catalog().settings.ids.parse(pid)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    base = base_url()
    if p["kind"] == "catalog":
        if catalog().release(int(p["version"])) is None:
            raise not_found(f"no catalog version {p['version']}")
        return redirect(f"{base}/api/catalog/v1/versions/{p['version']}", 302)
    eid = str(p["event_id"])
    if catalog().store.event(eid) is None:
        raise not_found(f"no event {eid[:80]!r}")
    v = f"?version={p['version']}" if p["version"] is not None else ""
    if p["version"] is not None and catalog().record(eid, int(p["version"])) is None:
        raise not_found(f"event {eid!r} has no record version {p['version']}")
    if p["kind"] == "assoc":
        return redirect(f"{base}/api/catalog/v1/events/{quote(eid, safe='')}/associations{v}", 302)
    return redirect(f"{base}/events/{quote(eid, safe='')}{v}", 302)


# ---- IVOA Simple Cone Search ----------------------------------------------------------------
@bp.get("/api/catalog/scs")
def cone_search():
    from broker.multimessenger.catalog.conesearch import ConeError, error_votable, search

    mime = "text/xml"  # what SCS 1.03 clients expect (pyvo accepts it and application/x-votable+xml)
    try:
        rel = _release_arg(request.args.get("release") or None, default_live=True)
        meta = release_meta(rel, catalog().settings)
        body = search(_records(rel), request.args, meta)
    except ConeError as exc:
        return Response(error_votable(str(exc)), mimetype=mime)
    except ApiError as exc:  # a bad or unknown release number
        return Response(error_votable(exc.message), mimetype=mime)
    return Response(body, mimetype=mime, headers=_license_headers(meta))
