"""``albireo watch``: tell watch-list owners when a locus enters a watched region (webhook or email)."""

from __future__ import annotations

import time

import click

from broker.cli.common import config_option, load


@click.group("watch")
def watch_group() -> None:
    """Watch-list notifications."""


@watch_group.command("notify")
@config_option
@click.option("--every", type=float, default=0.0, show_default=True,
              help="Seconds between runs; 0 = run once and exit.")
@click.option("--portal-url", default="", help="Base URL of the portal, for links in the notifications.")
def notify(config_path: str | None, every: float, portal_url: str) -> None:
    """Record loci newly inside each notifying watch list's cones and notify the owner once per locus.

    A failed send is recorded and retried on the next run (up to watch.max_attempts); the events
    are listed at /api/watchlists/<id>/events and on the portal's watch-list page.
    """
    from broker.assemble import open_index
    from web.watch_notify import run_once

    cfg = load(config_path)
    index = open_index(cfg)
    try:
        while True:
            r = run_once(index, cfg.web.data_dir, cfg.watch, portal_url)
            click.echo(f"watch: {r.found} new, {r.sent} sent, {r.failed} failed")
            if every <= 0:
                return
            time.sleep(every)
    finally:
        index.close()
