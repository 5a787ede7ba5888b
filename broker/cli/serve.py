"""``albireo serve``: the portal and API over a store and index, on a production WSGI server (waitress).

Which store it serves, in order: ``--store``/``--index``; ``--workdir`` (a demo's folder); the
configured store when it exists; otherwise the demo's store in ``./albireo-demo`` when a demo ran
here. A store that does not exist is refused unless ``--create`` asks for an empty one: a portal
pointed at a typo must say so, not serve nothing. The line it prints names the store it serves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from broker.cli.common import config_option, load


def resolve_store(cfg, store_path: str | None, index_path: str | None, workdir: Path | None,
                  explicit_config: bool) -> str | None:
    """Point ``cfg`` at the store to serve; returns a note to print when it was found, not given."""
    from broker.cli.demo import DEFAULT_WORKDIR, demo_store_paths

    if workdir is not None:
        s, i = demo_store_paths(workdir)
        store_path, index_path = store_path or str(s), index_path or str(i)
    if store_path:
        store_path = str(Path(store_path).absolute())
        cfg.store.backend, cfg.store.path = "sqlite", store_path
        if not index_path and cfg.search.backend == "sqlite":
            index_path = str(Path(store_path).with_name("index.sqlite"))
    if index_path:
        cfg.search.backend, cfg.search.path = "sqlite", str(Path(index_path).absolute())
    if store_path or explicit_config or cfg.store.backend != "sqlite" or Path(cfg.store.path).exists():
        return None
    demo_store, demo_index = demo_store_paths(DEFAULT_WORKDIR)
    if demo_store.exists():
        cfg.store.path, cfg.search.backend = str(demo_store.absolute()), "sqlite"
        cfg.search.path = str(demo_index.absolute())
        return f"no store at the configured path; serving the demo's store in ./{DEFAULT_WORKDIR}/"
    return None


@click.command("serve")
@config_option
@click.option("--host", default=None, help="Interface to bind (default: [web] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: [web] port, 8080; 0 picks a free one).")
@click.option("--store", "store_path", default=None, help="SQLite store path (overrides [store]).")
@click.option("--index", "index_path", default=None, help="SQLite index path (overrides [search]).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Serve the store and index an `albireo demo --workdir DIR` wrote.")
@click.option("--create", is_flag=True, help="Create an empty embedded store if there is none.")
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True, help="Worker threads.")
def serve(config_path: str | None, host: str | None, port: int | None, store_path: str | None,
          index_path: str | None, workdir: Path | None, create: bool, threads: int) -> None:
    """Serve the portal and the ANTARES-compatible API (embedded or Cassandra/Elasticsearch).

    After `albireo demo`, a bare `albireo serve` serves the demo's store.
    """
    from waitress.server import create_server

    from broker.assemble import StoreMissing, open_index, open_store
    from web import create_app

    cfg = load(config_path)
    explicit = bool(config_path or os.environ.get("ALBIREO_CONFIG") or os.environ.get("ALBIREO_STORE__PATH"))
    note = resolve_store(cfg, store_path, index_path, workdir, explicit)
    try:
        store = open_store(cfg, create=create)
        index = open_index(cfg, create=create)
    except StoreMissing as exc:
        raise click.ClickException(
            f"{exc}. Run `albireo demo` first, pass --store/--workdir, or add --create for an empty store."
        ) from exc
    app = create_app(cfg, store=store, index=index)
    srv = create_server(app, host=host or cfg.web.host, port=cfg.web.port if port is None else port,
                        threads=threads, ident="albireo")
    if note:
        click.echo(f"albireo serve: {note}", err=True)
    counts = store.counts()
    where = cfg.store.path if cfg.store.backend == "sqlite" else f"keyspace {cfg.store.keyspace}"
    # One line scripts (and the tests) parse to find the port.
    click.echo(f"albireo serve: listening on http://{srv.effective_host}:{srv.effective_port}/ "
               f"(store={cfg.store.backend}:{where}, {counts.get('loci', 0)} loci; index={cfg.search.backend})")
    sys.stdout.flush()
    try:
        srv.run()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
        store.close()
        index.close()
