"""``albireo scan-server``: start queued reconstruction scans, collect their results, refine, finish."""

from __future__ import annotations

import signal

import click

from broker.cli.common import config_option, load, setup_logging


@click.command("scan-server")
@config_option
@click.option("--store", "store_path", default=None,
              help="SQLite store path (overrides [store]; e.g. albireo-demo/albireo.sqlite, what `albireo serve` serves).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without results while no scan is queued or running.")
def scan_server(config_path: str | None, store_path: str | None, idle_timeout: float | None) -> None:
    """Run the scan server: the collector and refiner behind POST /api/scans.

    The API only stores a queued scan; this process starts it (the whole sky at the first nside),
    stores each pixel result once (duplicates from redelivered tasks are ignored), refines around
    the best pixels at the next nside, and marks the scan done after the last. Run exactly one
    per deployment (on Kafka a second one only waits: the results topic has one partition; on
    the SQLite queue two would split the results between them).
    """
    cfg = load(config_path)
    if store_path:
        cfg.store.backend, cfg.store.path = "sqlite", store_path
    setup_logging(cfg.service.log_level, cfg.service.log_format)
    from broker.assemble import scan_server as build

    server = build(cfg)
    stopping = {"now": False}

    def stop(_signum, _frame) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run(stop=lambda: stopping["now"], idle_timeout_s=idle_timeout)
