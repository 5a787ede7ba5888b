"""The Albireo portal and API: a Flask application factory with blueprints.

* ``api``    — ``/v2``: ANTARES-compatible JSON (``antares-client`` works against it unmodified);
* ``own``    — ``/api``: Albireo's own API (filters, streams, watch lists, multi-messenger), OpenAPI;
* ``portal`` — HTML pages (home, search, locus, filters, streams);
* VO services register later as more blueprints through :func:`create_app`'s ``blueprints``.

``create_app`` takes an already open store/index (tests, benchmarks) or opens the configured ones
(``albireo serve``: embedded SQLite or Cassandra/Elasticsearch).
"""

from __future__ import annotations

import importlib
from typing import Any

from flask import Flask

from broker.config import Config, load_config


def create_app(cfg: Config | None = None, *, store: Any = None, index: Any = None, catalogs: Any = "auto",
               blueprints: tuple[Any, ...] = ()) -> Flask:
    """Build the app over ``store``/``index`` (opened from ``cfg`` when not given)."""
    from broker.association import Associator
    from broker.search import open_index
    from broker.storage import open_store
    from web import api, errors, own_api, portal
    from web.backend import Backend

    cfg = cfg or load_config()
    if store is None:
        store = open_store(cfg.store, Associator(cfg.association.radius_arcsec).order)
    if index is None:
        index = open_index(cfg.search)
    if catalogs == "auto":
        catalogs = _open_catalogs(cfg)
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    app.extensions["albireo"] = Backend(cfg=cfg, store=store, index=index, catalogs=catalogs)
    app.register_blueprint(api.bp)
    app.register_blueprint(own_api.bp)
    app.register_blueprint(portal.bp)
    for extra in (*blueprints, *_optional_blueprints()):
        app.register_blueprint(extra)
    errors.register(app)
    return app


def _open_catalogs(cfg: Config) -> Any:
    """The catalog set the pipeline matches against, or None (catalog pages then say so)."""
    if not cfg.catalogs.enabled:
        return None
    from pathlib import Path

    from broker.crossmatch import CatalogSet

    if not Path(cfg.catalogs.root).is_dir():
        return None
    return CatalogSet.open(cfg.catalogs.root, verify=False)


def _optional_blueprints() -> list[Any]:
    """VO services and other features living in their own module (``web.vo``), when present."""
    out = []
    for module in ("web.vo",):
        try:
            out.append(importlib.import_module(module).bp)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return out
