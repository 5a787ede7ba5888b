"""``albireo replay``: produce real alert packets to Kafka (the load generator)."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import config_option, load, progress_enabled


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--topic", required=True, help="Kafka topic to produce to.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: from configuration).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Messages per second (default: as fast as possible).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Messages to produce (cycles through the inputs).")
@click.option("--jitter", is_flag=True, help="Shift positions and times and rewrite ids (a realistic larger stream).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for --jitter.")
@click.option("--visits", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --jitter: messages per object; later ones are new triggers of the same object "
                   "with the same history (a survey revisiting what it found).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one .avro-stream file instead of producing to Kafka.")
@click.option("--notices", is_flag=True,
              help="Folders hold notices (.json, .xml, .avro: GCN, LVK, VOEvent), keyed by event id.")
@config_option
def replay(paths: tuple[Path, ...], topic: str, bootstrap: str | None, rate: float | None, count: int | None,
           jitter: bool, seed: int, visits: int, out: Path | None, notices: bool, config_path: str | None) -> None:
    """Produce real alert packets (optionally jittered into a larger stream), or notices, to a topic.

    Files named directly are sent as they are, whatever they hold (a JSON or XML notice file
    included); --notices makes folders yield notice files instead of .avro packets.
    """
    from broker.adapters.streams.files import STREAM_SUFFIX, StreamFileSink
    from broker.ops import loadgen

    cfg = load(config_path)
    if visits > 1 and not jitter:
        raise click.BadParameter("needs --jitter (a revisit is a rewritten copy)", param_hint="--visits")
    sink = None
    if out is not None:
        if out.suffix != STREAM_SUFFIX:
            raise click.BadParameter(f"must end in {STREAM_SUFFIX}", param_hint="--out")
        sink = StreamFileSink(out)
    else:
        from broker.adapters.streams.kafka import check_reachable

        check_reachable(bootstrap or cfg.kafka.bootstrap_servers)
    try:
        stats = loadgen.replay(list(paths), topic=topic, bootstrap=bootstrap or cfg.kafka.bootstrap_servers,
                               rate=rate, count=count, jitter=jitter, seed=seed, sink=sink,
                               progress=progress_enabled(), notices=notices, visits=visits)
    finally:
        if sink is not None:
            sink.close()
    click.echo(" ".join(f"{k}={v}" for k, v in stats.as_dict().items()))
