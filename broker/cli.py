"""The ``albireo`` command.

``albireo demo`` runs the whole pipeline with no server (SQLite + files) on
real sample alerts; ``albireo run`` is the production worker (Kafka in and
out, any store); ``albireo services`` starts the local Kafka, Cassandra and
Elasticsearch; ``albireo replay`` turns real packets into larger streams.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import click

import broker
from broker.config import ConfigError, load_config, to_toml


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(broker.__version__, prog_name="albireo")
def main() -> None:
    """Albireo: an astronomical alert broker (ZTF, Rubin/LSST → loci → filters → tagged streams)."""


# ---- demo -----------------------------------------------------------------------------------
def default_demo_inputs(workdir: Path) -> list[Path]:
    """Real packets every installed machine has, plus ../shared/data when present."""
    from broker.samples import lsst_sample_packets, shared_ztf_dir

    inputs: list[Path] = []
    try:
        from broker.replay import ensure_demo_ztf_stream

        inputs.append(ensure_demo_ztf_stream(workdir / "cache"))
    except ImportError as exc:  # replay support missing: still run on the other samples
        click.echo(f"(skipping the antares-devkit ZTF locus: {exc})", err=True)
    inputs.extend(lsst_sample_packets())
    shared = shared_ztf_dir()
    if shared is not None:
        inputs.append(shared)
    return inputs


@main.command()
@click.option("--alerts", "alerts", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Avro packet files or folders (repeatable). Default: the bundled real samples.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("albireo-demo"), show_default=True,
              help="Where the SQLite store, index and output streams are written (recreated).")
@click.option("--config", "config_path", type=click.Path(exists=True), help="TOML configuration file.")
@click.option("--batch-size", type=int, default=None, help="Messages per pipeline batch.")
@click.option("--no-catalogs", is_flag=True, help="Skip the catalog cross-match stage.")
@click.option("--keep", is_flag=True, help="Keep an existing workdir's store instead of starting fresh.")
def demo(alerts: tuple[Path, ...], workdir: Path, config_path: str | None, batch_size: int | None,
         no_catalogs: bool, keep: bool) -> None:
    """Run the pipeline with no server at all on real alerts and print a summary."""
    from broker.streams.files import FileSink, FileSource
    from broker.worker import Worker, build_catalogs, build_pipeline, build_store

    cfg = _config(config_path)
    _setup_logging("WARNING" if cfg.service.log_level == "INFO" else cfg.service.log_level)
    if workdir.exists() and not keep:
        for name in ("albireo.sqlite", "albireo.sqlite-wal", "albireo.sqlite-shm", "index.sqlite",
                     "index.sqlite-wal", "index.sqlite-shm", "index.outbox.sqlite", "index.outbox.sqlite-wal",
                     "index.outbox.sqlite-shm", "streams"):
            p = workdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.store.backend = "sqlite"
    cfg.store.path = str(workdir / "albireo.sqlite")
    cfg.search.backend = "sqlite"
    cfg.search.path = str(workdir / "index.sqlite")
    if no_catalogs:
        cfg.catalogs.enabled = False
    inputs = list(alerts) or default_demo_inputs(workdir)
    click.echo("inputs:\n" + "\n".join(f"  {p}" for p in inputs))

    from broker.association import Associator

    associator = Associator(cfg.association.radius_arcsec)
    store = build_store(cfg, associator)
    sink = FileSink(workdir / "streams")
    index_writer = _index_writer(cfg)
    catalogs = build_catalogs(cfg)
    pipeline = build_pipeline(cfg, store, sink, index_writer=index_writer, catalogs=catalogs, associator=associator)
    worker = Worker(pipeline, FileSource(inputs), batch_size=batch_size or cfg.kafka.batch_size)
    summary = worker.run()
    index_writer.close()
    click.echo("\n" + summary.render())
    counts = store.counts()
    click.echo(f"\nstore: {counts['loci']} loci, {counts['alerts']} alerts, {counts['dead_letters']} dead letters "
               f"in {cfg.store.path}")
    click.echo(f"index: {index_writer.index.count()} locus documents in {cfg.search.path}")
    click.echo(f"streams: {sink.out_dir}/<topic>.avro-stream ({sum(sink.counts.values())} messages)")
    click.echo(f"browse:  albireo serve --store {cfg.store.path} --index {cfg.search.path}  "
               "(then http://127.0.0.1:8080)")
    store.close()


def _index_writer(cfg):
    """The index writer the pipeline calls (through the durable outbox where available)."""
    from broker.outbox import IndexWriter
    from broker.search import open_index

    return IndexWriter(open_index(cfg.search), outbox_path=str(Path(cfg.search.path).with_suffix(".outbox.sqlite")))


def _config(path: str | None):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


# ---- run ------------------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True), help="TOML configuration file.")
@click.option("--max-messages", type=int, default=None, help="Stop after this many input messages.")
@click.option("--idle-timeout", type=float, default=None, help="Stop after this many seconds without input.")
def run(config_path: str | None, max_messages: int | None, idle_timeout: float | None) -> None:
    """Run one worker of the consumer group: Kafka in, tagged Kafka streams out."""
    from broker.association import Associator
    from broker.streams.kafka import KafkaSink, KafkaSource, ensure_topics
    from broker.worker import Worker, build_catalogs, build_pipeline, build_store

    cfg = _config(config_path)
    _setup_logging(cfg.service.log_level)
    k = cfg.kafka
    ensure_topics(k.bootstrap_servers, [*k.input_topics, k.dead_letter_topic], extra=k.extra)
    associator = Associator(cfg.association.radius_arcsec)
    store = build_store(cfg, associator)
    source = KafkaSource(k.bootstrap_servers, k.group_id, k.input_topics, extra=k.extra)
    txn_id = f"{k.group_id}-{__import__('uuid').uuid4().hex[:8]}" if k.transactional else None
    sink = KafkaSink(k.bootstrap_servers, extra=k.extra, transactional_id=txn_id)
    index_writer = _index_writer(cfg)
    pipeline = build_pipeline(cfg, store, sink, index_writer=index_writer, catalogs=build_catalogs(cfg),
                              associator=associator)
    if cfg.service.metrics_port:
        from broker.metrics_server import serve_metrics

        serve_metrics(pipeline.metrics, cfg.service.metrics_port)
    worker = Worker(pipeline, source, batch_size=k.batch_size, poll_timeout_s=k.poll_timeout_s,
                    transactional_sink=sink if k.transactional else None)
    worker.install_signal_handlers()
    try:
        summary = worker.run(max_messages=max_messages, idle_timeout_s=idle_timeout)
    finally:
        source.close()
        sink.close()
        index_writer.close(timeout=30)
        store.close()
    click.echo(summary.render())


# ---- config ---------------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--config", "config_path", type=click.Path(exists=True), help="TOML configuration file.")
def config_show(config_path: str | None) -> None:
    """Print the effective configuration (defaults ← file ← ALBIREO_* environment) as TOML."""
    click.echo(to_toml(_config(config_path)))


# ---- services -------------------------------------------------------------------------------
@main.group()
def services() -> None:
    """Start, stop and inspect the local Kafka, Cassandra and Elasticsearch servers."""


_SERVICE_NAMES = click.Choice(["kafka", "cassandra", "elasticsearch"])


@services.command("up")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_up(names: tuple[str, ...]) -> None:
    """Fetch (Maven Central) and start the named servers on 127.0.0.1 (default: all)."""
    from broker import services as svc

    svc.up(list(names) or ["kafka", "cassandra", "elasticsearch"])


@services.command("down")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_down(names: tuple[str, ...]) -> None:
    """Stop the named servers (default: all)."""
    from broker import services as svc

    svc.down(list(names) or ["kafka", "cassandra", "elasticsearch"])


@services.command("status")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_status(names: tuple[str, ...]) -> None:
    """Show each server's state (installed, running, healthy)."""
    from broker import services as svc

    for name, state in svc.status(list(names) or ["kafka", "cassandra", "elasticsearch"]).items():
        click.echo(f"{name:14s} " + "  ".join(f"{k}={v}" for k, v in state.items()))


# ---- replay ---------------------------------------------------------------------------------
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--topic", required=True, help="Kafka topic to produce to.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: from configuration).")
@click.option("--rate", type=float, default=None, help="Messages per second (default: as fast as possible).")
@click.option("--count", type=int, default=None, help="Messages to produce (cycles through the inputs).")
@click.option("--jitter", is_flag=True, help="Shift positions and times and rewrite ids (a realistic larger stream).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for --jitter.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write an .avro-stream file instead of producing to Kafka.")
def replay(paths: tuple[Path, ...], topic: str, bootstrap: str | None, rate: float | None, count: int | None,
           jitter: bool, seed: int, out: Path | None) -> None:
    """Produce real alert packets (optionally jittered into a larger stream) to a topic."""
    from broker import replay as rp

    cfg = _config(None)
    sink = rp.StreamFileSink(out) if out is not None else None
    try:
        stats = rp.replay(list(paths), topic=topic, bootstrap=bootstrap or cfg.kafka.bootstrap_servers, rate=rate,
                          count=count, jitter=jitter, seed=seed, sink=sink, progress=True)
    finally:
        if sink is not None:
            sink.close()
    click.echo(" ".join(f"{k}={v}" for k, v in stats.as_dict().items()))


def _attach_optional_groups() -> None:
    """Command groups that live with their feature (catalogs, filters, portal)."""
    import importlib

    for module, attr in (("broker.catalog_cli", "catalog"), ("broker.filter_cli", "filter_group"),
                         ("web.cli", "serve"), ("broker.bench_cli", "bench")):
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the feature exists but a dependency is missing: say so
                raise
            continue
        main.add_command(cmd)


_attach_optional_groups()

if __name__ == "__main__":
    main()
