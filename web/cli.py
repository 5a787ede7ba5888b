"""``albireo serve``: the portal and API on the configured store and index."""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(exists=True), help="TOML configuration file.")
@click.option("--host", default=None, help="Interface to bind (default: [web] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: [web] port, 8080; 0 picks a free one).")
@click.option("--store", "store_path", default=None, help="SQLite store path (overrides [store] path).")
@click.option("--index", "index_path", default=None, help="SQLite index path (overrides [search] path).")
@click.option("--threads", type=int, default=8, show_default=True, help="Worker threads.")
def serve(config_path: str | None, host: str | None, port: int | None, store_path: str | None,
          index_path: str | None, threads: int) -> None:
    """Serve the portal and the ANTARES-compatible API (embedded or Cassandra/Elasticsearch)."""
    from werkzeug.serving import make_server

    from broker.config import ConfigError, load_config
    from web import create_app

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if store_path:
        cfg.store.backend, cfg.store.path = "sqlite", store_path
    if index_path:
        cfg.search.backend, cfg.search.path = "sqlite", index_path
    app = create_app(cfg)
    srv = make_server(host or cfg.web.host, cfg.web.port if port is None else port, app, threaded=True)
    # One line scripts (and the integration test) parse to find the port.
    click.echo(f"albireo serve: listening on http://{srv.host}:{srv.port}/ "
               f"(store={cfg.store.backend}, index={cfg.search.backend})", err=False)
    import sys

    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
