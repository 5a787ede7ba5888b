"""The OpenAPI 3.1 description of ``/api`` and ``/v2`` (served at ``/api/openapi.json``).

Written as data next to the code rather than generated: the routes are few, and a test checks
that every documented path exists in the app's URL map and vice versa.
"""

from __future__ import annotations

from typing import Any


def _op(summary: str, params: list[dict[str, Any]] | None = None, auth: bool = False,
        body: str | None = None, codes: tuple[int, ...] = (200, 400, 404)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    for c in codes:
        op["responses"][str(c)] = {"description": {200: "OK", 201: "Created", 302: "Redirect to the identified resource", 204: "Deleted", 400: "Bad parameter",
                                                   401: "No, unknown or revoked API key",
                                                   403: "Not allowed (role, owner or CSRF token)", 502: "Kafka refused",
                                                   404: "Not found",
                                                   409: "Conflicts with the current state (reason given: e.g. already "
                                                        "finished, not approved)",
                                                   422: "Submission refused"}[c],
                                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                               + ("Error" if c >= 400 else
                                                                                  "Envelope")}}}}
    if params:
        op["parameters"] = params
    if auth:
        op["security"] = [{"apiKey": []}, {"session": []}]
    if body:
        op["requestBody"] = {"content": {body: {"schema": {"type": "object"}}}}
    return op


def _p(name: str, where: str = "query", typ: str = "string", desc: str = "", required: bool = False):
    return {"name": name, "in": where, "required": required or where == "path", "description": desc,
            "schema": {"type": typ}}


def spec(server: str) -> dict[str, Any]:
    lid = _p("locus_id", "path")
    eid, ver = _p("event_id", "path"), _p("version", "path", desc="a number, latest or live")
    tab, fmt = _p("table", "path", desc="events or associations"), _p("fmt", "path",
                                                                       desc="fits, vot, csv, ecsv, parquet, json")
    ever = _p("version", desc="a record version number, or live (default: the latest frozen version)")
    paths = {
        "/v2/loci": {"get": _op("Search loci (ANTARES-compatible)", [
            _p("elasticsearch_query", desc="JSON body with a top-level 'query' (bool/term/range/sky_distance)"),
            _p("limit", typ="integer", desc="page size, 0..1000 (default 10)"),
            _p("sort", desc="e.g. -properties.newest_alert_observation_time"),
            _p("page[cursor]", desc="opaque cursor from links.next")])},
        "/v2/loci/statistics": {"get": _op("Tag and catalog counts")},
        "/v2/loci/random": {"get": _op("Locus ids drawn at random from the whole index",
                                       [_p("n", typ="integer"), _p("seed", typ="integer")])},
        "/v2/loci/{locus_id}": {"get": _op("One locus with its light curve (CSV)", [lid])},
        "/v2/loci/{locus_id}/alerts": {"get": _op("Alerts of a locus, oldest first", [lid])},
        "/v2/loci/{locus_id}/catalog-matches": {"get": _op("Catalog objects matched to a locus", [lid])},
        "/v2/alerts/{alert_id}/thumbnails": {"get": _op("Cutouts of an alert", [_p("alert_id", "path")])},
        "/v2/alerts/{alert_id}/cutouts/{kind}": {"get": _op("Raw FITS cutout", [_p("alert_id", "path"),
                                                                                  _p("kind", "path")])},
        "/v2/catalog_search/{ra}/{dec}": {"get": _op("Catalog objects at a position",
                                                     [_p("ra", "path", "number"), _p("dec", "path", "number")])},
        "/v2/catalog_samples": {"get": _op("A few rows of each catalog", [_p("n", typ="integer")])},
        "/v2/grav_wave_notice/latest": {"get": _op("Latest notices of several events", [_p("ids", required=True)])},
        "/v2/grav_wave_notice/{gracedb_id}/latest": {"get": _op("Latest notice of an event",
                                                                [_p("gracedb_id", "path")])},
        "/v2/grav_wave_notice/{gracedb_id}/{notice_datetime}": {"get": _op("One notice", [
            _p("gracedb_id", "path"), _p("notice_datetime", "path", desc="ISO 8601")])},
        "/api/status": {"get": _op("Store counts, alerts/s, index statistics", codes=(200,))},
        "/api/filters": {"get": _op("Filters with per-filter figures", codes=(200,)),
                         "post": _op("Submit a filter revision", auth=True, body="multipart/form-data",
                                     codes=(201, 400, 401, 403, 422))},
        "/api/filters/{name}": {"get": _op("One filter with its revisions", [_p("name", "path")])},
        "/api/filters/{name}/approve": {"post": _op("Approve a revision (fields revision, default the newest; note); "
                                                    "admin key", [_p("name", "path")], auth=True,
                                                    body="application/json", codes=(200, 400, 401, 403, 404))},
        "/api/filters/{name}/reject": {"post": _op("Reject a revision (fields revision; reason, required); admin key",
                                                   [_p("name", "path")], auth=True, body="application/json",
                                                   codes=(200, 400, 401, 403, 404))},
        "/api/filters/{name}/enable": {"post": _op("Enable an approved revision (field revision; default the newest); "
                                                   "409 with the reason when it is not approved or a filter it "
                                                   "requires is not enabled", [_p("name", "path")], auth=True,
                                                   body="application/json", codes=(200, 401, 403, 404, 409, 422))},
        "/api/filters/{name}/disable": {"post": _op("Disable the enabled revision (field reason)",
                                                    [_p("name", "path")], auth=True, body="application/json",
                                                    codes=(200, 401, 403, 404))},
        "/api/filters/test": {"post": _op("Run code, sandboxed, on uploaded Avro packets (alerts) or stored loci "
                                          "(locus_ids); returns tags, properties, timing and errors", auth=True,
                                          body="multipart/form-data", codes=(200, 400, 401, 403, 404, 422))},
        "/api/filters/{name}/backfill": {"post": _op("A revision over stored loci (since, until, revision, limit): "
                                                   "a dry run; compare [A, B] or against; write (store + index, "
                                                   "with provenance; admin); publish (also to the streams; "
                                                   "admin); resume (a run id; admin)", [_p("name", "path")],
                                                   auth=True, body="application/json",
                                                   codes=(200, 400, 401, 403, 404, 502))},
        "/api/streams": {"get": _op("Tag streams, their topics and subscription snippets", codes=(200,))},
        "/api/watchlists": {"get": _op("Watch lists", codes=(200,)),
                            "post": _op("Create a watch list", auth=True, body="application/json",
                                        codes=(201, 400, 401, 403))},
        "/api/watchlists/{wl_id}": {"delete": _op("Delete a watch list", [_p("wl_id", "path")], auth=True,
                                                  codes=(204, 401, 403, 404))},
        "/api/watchlists/{wl_id}/loci": {"get": _op("Loci inside a watch list's cones", [_p("wl_id", "path")])},
        "/api/watchlists/{wl_id}/events": {"get": _op("Loci that entered the watch list and whether the owner was told",
                                                      [_p("wl_id", "path")])},
        "/api/mm/events": {"get": _op("Multi-messenger events (GW, neutrino, optical), newest first",
                                      [_p("messenger"), _p("status"), _p("include_test"), _p("limit")], codes=(200,))},
        "/api/mm/events/{event_id}": {"get": _op("One event: state, areas, revisions", [_p("event_id", "path")])},
        "/api/mm/events/{event_id}/loci": {"get": _op("The loci inside an event's credible region",
                                                      [_p("event_id", "path"), _p("limit")])},
        "/api/mm/events/{event_id}/alerts": {"get": _op("Every revision of an event's outgoing alerts (GCN JSON "
                                                        "notices, VOEvent, circular)", [_p("event_id", "path")])},
        "/api/mm/events/{event_id}/alerts/{record_number}/{kind}": {"get": _op(
            "One outgoing alert exactly as published (kind: neutrino, optical, voevent, circular)",
            [_p("event_id", "path"), _p("record_number", "path"), _p("kind", "path")])},
        "/api/mm/events/{event_id}/moc/{level}.json": {"get": _op("An event's credible region as a MOC (JSON)", [
            _p("event_id", "path"), _p("level", "path")])},
        "/api/mm/notices/{notice_id}": {"get": _op("One stored notice", [_p("notice_id", "path")])},
        "/api/scans": {"get": _op("Reconstruction scans, newest first", [_p("status"), _p("limit", typ="integer")]),
                       "post": _op("Start a scan (SkyDriver's POST /scan): body {event: a GCN neutrino notice or "
                                   "{ra, dec, time|mjd, run_id, event_id}, reconstruction, nside_progression "
                                   "(default [8, 64, 512]), priority (realtime|backfill), params}; returns scan_id",
                                   auth=True, body="application/json", codes=(201, 400, 401, 403, 422))},
        "/api/scans/reconstructions": {"get": _op("Registered reconstructions and their parameters", codes=(200,))},
        "/api/scans/find": {"post": _op("Scans matching {filter: {run_id, event_id, source_event, status, priority, "
                                        "reconstruction}, limit}", body="application/json", codes=(200, 400))},
        "/api/scans/backlog": {"get": _op("Queued and running scans, realtime lane first", codes=(200,))},
        "/api/scans/{scan_id}": {"get": _op("One scan: event, reconstruction, state, best fit, areas",
                                            [_p("scan_id", "path")]),
                                 "delete": _op("Abort a scan (its owner or an admin): its remaining tasks are skipped",
                                               [_p("scan_id", "path")],
                                               auth=True, codes=(200, 400, 401, 403, 404, 409))},
        "/api/scans/{scan_id}/status": {"get": _op("A scan's state (queued, running, done, aborted, failed)",
                                                   [_p("scan_id", "path")])},
        "/api/scans/{scan_id}/manifest": {"get": _op("Progress: pixels done per nside, rate, ETA, complete, "
                                                     "pixels per worker", [_p("scan_id", "path")])},
        "/api/scans/{scan_id}/result": {"get": _op("{skyscan_result: icecube-skyreader's SkyScanResult.serialize() "
                                                   "layout (partial while running), is_final, summary}",
                                                   [_p("scan_id", "path")])},
        "/api/catalog/v1": {"get": _op("The FAIR event catalog: licence, identifier scheme, links", codes=(200,))},
        "/api/catalog/v1/versions": {"get": _op("Published (immutable) catalog versions, oldest first", codes=(200,))},
        "/api/catalog/v1/versions/{version}": {"get": _op(
            "One catalog version's event records (version: a number, latest, or live = unpublished)", [ver])},
        "/api/catalog/v1/versions/{version}/{table}.{fmt}": {"get": _op(
            "Export a version's table (events, associations) as fits, vot, csv, ecsv, parquet or json, with units, "
            "UCDs and the licence", [ver, tab, fmt])},
        "/api/catalog/v1/versions/{version}/datacite.json": {"get": _op(
            "The DataCite kernel-4 record of a published catalog version", [ver])},
        "/api/catalog/v1/versions/{version}/jsonld": {"get": _op(
            "The schema.org Dataset (JSON-LD) of a published catalog version", [ver])},
        "/api/catalog/v1/events/{event_id}": {"get": _op("An event's catalog record (latest version, or ?version=n|live), "
                                                         "its versions and links", [eid, ever])},
        "/api/catalog/v1/events/{event_id}/associations": {"get": _op(
            "The event's locus associations (credible level and area, distance)", [eid, ever])},
        "/api/catalog/v1/events/{event_id}/{table}.{fmt}": {"get": _op(
            "Export an event's record (events) or associations in one format", [eid, tab, fmt, ever])},
        "/api/catalog/v1/events/{event_id}/jsonld": {"get": _op(
            "The schema.org Dataset (JSON-LD) of an event's record, as embedded in its landing page", [eid, ever])},
        "/api/catalog/v1/events/{event_id}/datacite.json": {"get": _op(
            "The DataCite kernel-4 metadata record of an event's record version", [eid, ever])},
        "/api/catalog/v1/events/{event_id}/skymap.multiorder.fits": {"get": _op(
            "The record version's sky map as multi-order HEALPix FITS (UNIQ, PROBDENSITY)", [eid, ever])},
        "/api/catalog/v1/resolve/{pid}": {"get": _op("Resolve a persistent identifier (302 to its page)",
                                                     [_p("pid", "path", desc="e.g. albireo:event/<id>/v1")],
                                                     codes=(302, 400, 404))},
        "/api/catalog/scs": {"get": _op("IVOA Simple Cone Search 1.03 over the events (VOTable; errors as a VOTable "
                                        "with INFO name=Error)", [_p("RA", typ="number", required=True),
                                                                   _p("DEC", typ="number", required=True),
                                                                   _p("SR", typ="number", required=True,
                                                                      desc="radius, degrees (0..180)"),
                                                                   _p("VERB", typ="integer"),
                                                                   _p("release", desc="a version number or live "
                                                                      "(default: the latest published)")],
                                        codes=(200,))},
        "/api/openapi.json": {"get": _op("This document", codes=(200,))},
        "/api/users": {"get": _op("Users, roles, grants and key ids (admin)", auth=True, codes=(200, 401, 403)),
                       "post": _op("Create a user (name, role, groups); the Kafka password and first API key "
                                   "are in this response only (admin)", auth=True, body="application/json",
                                   codes=(201, 400, 401, 403, 502))},
        "/api/users/me": {"get": _op("Your own record", auth=True, codes=(200, 401))},
        "/api/users/{name}": {"get": _op("One user (admin)", [_p("name", "path")], auth=True,
                                         codes=(200, 401, 403, 404)),
                              "delete": _op("Remove a user: credentials, ACLs, keys, grants (admin)",
                                            [_p("name", "path")], auth=True, codes=(204, 401, 403, 404, 502))},
        "/api/users/{name}/grants": {"post": _op("Grant streams (streams: list): ACLs on the broker (admin)",
                                                 [_p("name", "path")], auth=True, body="application/json",
                                                 codes=(200, 400, 401, 403, 404, 502))},
        "/api/users/{name}/grants/{stream}": {"delete": _op("Revoke a stream grant (admin)",
                                                            [_p("name", "path"), _p("stream", "path")], auth=True,
                                                            codes=(204, 401, 403, 404, 502))},
        "/api/users/{name}/keys": {"post": _op("A new API key (yourself, or anyone as admin), shown once",
                                               [_p("name", "path")], auth=True, body="application/json",
                                               codes=(201, 401, 403, 404))},
        "/api/users/{name}/keys/{key_id}": {"delete": _op("Revoke an API key (yours, or anyone's as admin)",
                                                          [_p("name", "path"), _p("key_id", "path")], auth=True,
                                                          codes=(204, 401, 403, 404))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Albireo API", "version": "1",
                 "description": "ANTARES-compatible /v2 (works with antares-client) and Albireo's own /api."},
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "a per-user API key alb_<id>_<secret> (albireo users add/key)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "a portal login (/login); writes also need the X-CSRF-Token header "
                                           "or csrf_token field"}},
            "schemas": {
                "Envelope": {"type": "object", "properties": {"data": {}, "meta": {"type": "object"},
                                                              "links": {"type": "object"}}},
                "Error": {"type": "object", "required": ["message"],
                          "properties": {"message": {"type": "string"}, "errors": {"type": "array"}}},
            },
        },
    }
