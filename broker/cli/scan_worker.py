"""``albireo scan-worker``: evaluate reconstruction-scan pixel tasks (``--processes N``; more machines run the same)."""

from __future__ import annotations

import signal
import subprocess
import sys

import click

from broker.cli.common import config_option, load, setup_logging


@click.command("scan-worker")
@config_option
@click.option("--store", "store_path", default=None,
              help="SQLite store path (overrides [store]; e.g. albireo-demo/albireo.sqlite, what `albireo serve` serves).")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run on this machine (one consumer group: they share the tasks).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without a task.")
def scan_worker(config_path: str | None, store_path: str | None, processes: int,
                idle_timeout: float | None) -> None:
    """Evaluate pixel tasks of reconstruction scans and publish their results.

    Tasks come from the realtime lane first, then the backfill lane ([scans] queue: kafka, or the
    SQLite queue of the embedded stack). A task is committed only after its results were
    acknowledged, so a killed worker loses nothing: its tasks are delivered again. SIGTERM or
    Ctrl-C finishes the tasks in hand and exits. Reconstructions are the built-ins plus the modules
    named in scans.plugins.
    """
    cfg = load(config_path)
    if store_path:
        cfg.store.backend, cfg.store.path = "sqlite", store_path
    setup_logging(cfg.service.log_level, cfg.service.log_format)
    if processes > 1:
        cmd = [sys.executable, "-m", "broker.cli", "scan-worker"] + (["--config", config_path] if config_path else [])
        cmd += ["--idle-timeout", str(idle_timeout)] if idle_timeout is not None else []
        cmd += ["--store", store_path] if store_path else []
        procs = [subprocess.Popen(cmd) for _ in range(processes)]

        def forward(signum, _frame) -> None:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        sys.exit(max(p.wait() for p in procs))
    from broker.assemble import scan_worker as build

    worker = build(cfg)
    stopping = {"now": False}

    def stop(_signum, _frame) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stats = worker.run(stop=lambda: stopping["now"], idle_timeout_s=idle_timeout)
    rate = stats.pixels / stats.compute_s if stats.compute_s > 0 else 0.0
    click.echo(f"tasks {stats.tasks}  pixels {stats.pixels}  skipped {stats.skipped}  rejected {stats.rejected}  "
               f"errors {stats.errors}  compute {stats.compute_s:.2f}s ({rate:,.0f} pixels/s)")
