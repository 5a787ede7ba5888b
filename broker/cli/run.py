"""``albireo run``: workers of the Kafka consumer group (``--workers N`` here; more machines run the same)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time

import click

from broker.cli.common import config_option, load, setup_logging

log = logging.getLogger("albireo.run")


@click.command()
@config_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run in this consumer group on this machine.")
@click.option("--max-messages", type=click.IntRange(min=1), default=None, help="Stop after this many input messages.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without input.")
@click.option("--slot", type=click.IntRange(min=0), default=0, hidden=True,
              help="This worker's slot on this machine (set by --workers; names its transactional id).")
def run(config_path: str | None, workers: int, max_messages: int | None, idle_timeout: float | None,
        slot: int) -> None:
    """Run workers of the consumer group: Kafka in, tagged Kafka streams out.

    The store and index are the configured ones ([store] backend, [search] backend). Workers of
    one kafka.group_id share the input partitions; start the same command on more machines to
    scale out. SIGTERM or Ctrl-C finishes the batch in hand, commits it and exits. With
    --workers N, a worker that crashes is restarted; each serves /metrics and /healthz on
    service.metrics_port + its slot.
    """
    from broker.adapters.streams.kafka import check_reachable

    cfg = load(config_path)
    setup_logging(cfg.service.log_level, cfg.service.log_format)
    check_reachable(cfg.kafka.bootstrap_servers)
    if workers > 1:
        sys.exit(_supervise(workers, config_path, max_messages, idle_timeout))
    _run_one(cfg, slot, max_messages, idle_timeout)


def transactional_id(group_id: str, slot: int) -> str:
    """Stable per machine and slot, so a restarted worker fences its zombie (Kafka aborts the old one's transaction)."""
    return f"{group_id}-{socket.gethostname()}-slot{slot}"


def _run_one(cfg, slot: int, max_messages: int | None, idle_timeout: float | None) -> None:
    import faulthandler

    from broker.assemble import kafka_worker

    # `kill -USR1 <pid>` prints every thread's stack to stderr: how an operator sees where a stuck worker waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    assembly = kafka_worker(cfg, transactional_id=transactional_id(cfg.kafka.group_id, slot))
    if cfg.service.metrics_port:
        from broker.metrics_server import serve_metrics

        serve_metrics(assembly.pipeline.metrics, cfg.service.metrics_port + slot, host=cfg.service.metrics_host,
                      health=assembly.worker.health)
    assembly.worker.install_signal_handlers()
    watchdog = None
    if cfg.service.stall_timeout_s:
        from broker.watchdog import StallWatchdog

        # A client call blocked for good (see broker/watchdog.py) ends this worker, not the stream.
        watchdog = StallWatchdog(assembly.worker.seconds_without_progress, cfg.service.stall_timeout_s).start()
    try:
        summary = assembly.worker.run(max_messages=max_messages, idle_timeout_s=idle_timeout)
    finally:
        assembly.worker.progressed()  # closing gets the same allowance (a consumer close can block too)
        assembly.close(index_timeout_s=30)
    if watchdog is not None:
        watchdog.stop()
    click.echo(f"[slot {slot}]\n" + summary.render())


def _supervise(n: int, config_path: str | None, max_messages: int | None, idle_timeout: float | None) -> int:
    """Run ``n`` worker processes; restart one that crashes; forward SIGTERM/SIGINT and wait for all."""
    def command(slot: int) -> list[str]:
        cmd = [sys.executable, "-m", "broker.cli", "run", "--slot", str(slot)]
        if config_path:
            cmd += ["--config", config_path]
        if max_messages:
            cmd += ["--max-messages", str(max_messages)]
        if idle_timeout is not None:
            cmd += ["--idle-timeout", str(idle_timeout)]
        return cmd

    procs = {slot: subprocess.Popen(command(slot)) for slot in range(n)}
    backoff = {slot: 1.0 for slot in procs}
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes: dict[int, int] = {}
    while len(codes) < n:
        for slot, p in list(procs.items()):
            if slot in codes or p.poll() is None:
                continue
            # 2 and 3 are user errors (configuration, unreachable server): restarting would not help.
            if p.returncode not in (0, 2, 3) and not stopping:
                log.error("worker slot %d exited with %s; restarting in %.0fs", slot, p.returncode, backoff[slot],
                          extra={"worker": slot})
                time.sleep(backoff[slot])
                backoff[slot] = min(backoff[slot] * 2, 30.0)
                procs[slot] = subprocess.Popen(command(slot))
            else:
                codes[slot] = p.returncode
        time.sleep(0.2)
    return max(codes.values(), default=0)
