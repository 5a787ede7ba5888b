"""The Albireo portal and API: a Flask application factory with blueprints.

* ``api``    — ``/v2``: ANTARES-compatible JSON (``antares-client`` works against it unmodified);
* ``own``    — ``/api``: Albireo's own API (filters, streams, watch lists, multi-messenger), OpenAPI;
* ``users``  — ``/api/users``: users, stream grants and API keys (admins; :mod:`web.users_api`);
* ``auth``   — ``/login``, ``/logout``: portal sessions; API keys and CSRF checks (:mod:`web.auth`);
* ``portal`` — HTML pages (home, search, locus, filters, streams);
* ``events`` — multi-messenger event list and event pages, and ``/api/mm`` (``web/events.py``);
* ``scans``  — reconstruction scans: ``/api/scans`` (SkyDriver's routes) and the ``/scans`` pages (``web/scans.py``);
* ``catalog`` — the FAIR event catalog: ``/api/catalog/v1``, exports, Simple Cone Search (``web/catalog.py``);
* more blueprints (VO services, multi-messenger pages) are added to the one list in
  :func:`create_app` that names everything the app serves, or passed as ``blueprints``.

``create_app`` takes an already open store/index (tests, benchmarks) or opens the configured ones
(``albireo serve``: embedded SQLite or Cassandra/Elasticsearch).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from broker.config import Config, load_config
from broker.ports import Index, Store


def create_app(cfg: Config | None = None, *, store: Store | None = None, index: Index | None = None,
               catalogs: Any = "auto", blueprints: tuple[Any, ...] = (), users: Any = None) -> Flask:
    """Build the app over ``store``/``index`` (opened from ``cfg`` when not given).

    ``users`` (:class:`broker.access.service.Users`, default: opened from ``cfg``) decides who may
    write: API keys and login sessions (:mod:`web.auth`).
    """
    from broker.assemble import open_catalogs, open_index, open_store, open_users
    from web import api, auth, catalog, errors, events, hardening, own_api, portal, scans, users_api
    from web import metrics as web_metrics
    from web.backend import Backend

    cfg = cfg or load_config()
    if store is None:
        store = open_store(cfg)
    if index is None:
        index = open_index(cfg)
    if catalogs == "auto":
        catalogs = open_catalogs(cfg, build_defaults=False)
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    app.extensions["albireo"] = Backend(cfg=cfg, store=store, index=index, catalogs=catalogs)
    for bp in (api.bp, own_api.bp, users_api.bp, portal.bp, events.bp, scans.bp, catalog.bp, web_metrics.bp,
               *blueprints):
        app.register_blueprint(bp)
    auth.install(app, users if users is not None else open_users(cfg, check_reachable_now=False))
    web_metrics.install(app)
    errors.register(app)
    hardening.install(app)
    return app
