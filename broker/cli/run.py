"""``albireo run``: one worker of the Kafka consumer group (start more for more partitions)."""

from __future__ import annotations

import click

from broker.cli.common import config_option, load, setup_logging


@click.command()
@config_option
@click.option("--max-messages", type=click.IntRange(min=1), default=None, help="Stop after this many input messages.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without input.")
def run(config_path: str | None, max_messages: int | None, idle_timeout: float | None) -> None:
    """Run one worker of the consumer group: Kafka in, tagged Kafka streams out.

    The store and index are the configured ones ([store] backend, [search] backend). SIGTERM
    or Ctrl-C finishes the batch in hand, commits it and exits.
    """
    from broker.adapters.streams.kafka import check_reachable
    from broker.assemble import kafka_worker

    cfg = load(config_path)
    setup_logging(cfg.service.log_level)
    check_reachable(cfg.kafka.bootstrap_servers)
    assembly = kafka_worker(cfg)
    if cfg.service.metrics_port:
        from broker.metrics_server import serve_metrics

        serve_metrics(assembly.pipeline.metrics, cfg.service.metrics_port)
    assembly.worker.install_signal_handlers()
    try:
        summary = assembly.worker.run(max_messages=max_messages, idle_timeout_s=idle_timeout)
    finally:
        assembly.close(index_timeout_s=30)
    click.echo(summary.render())
