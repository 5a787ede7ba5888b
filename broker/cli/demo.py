"""``albireo demo``: the main job with no server at all, on real sample alerts."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from broker.cli.common import config_option, load, progress_bar, setup_logging

#: what a demo run writes in its workdir (removed before a fresh run; ``cache/`` is kept).
DEMO_FILES = ("albireo.sqlite", "index.sqlite", "index.outbox.sqlite", "streams")
DEFAULT_WORKDIR = Path("albireo-demo")


def demo_store_paths(workdir: Path) -> tuple[Path, Path]:
    """(store, index) of a demo run in ``workdir``: what ``albireo serve`` opens after a demo."""
    return workdir / "albireo.sqlite", workdir / "index.sqlite"


def _clean(workdir: Path) -> None:
    for name in DEMO_FILES:
        for p in (workdir / name, workdir / f"{name}-wal", workdir / f"{name}-shm"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


@click.command()
@click.option("--alerts", "alerts", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Avro packet files or folders (repeatable). Default: the bundled real samples.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
              show_default=True, help="Where the SQLite store, index and output streams are written (recreated).")
@config_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Messages per pipeline batch.")
@click.option("--no-catalogs", is_flag=True, help="Skip the catalog cross-match stage.")
@click.option("--keep", is_flag=True, help="Keep an existing workdir's store instead of starting fresh.")
def demo(alerts: tuple[Path, ...], workdir: Path, config_path: str | None, batch_size: int | None,
         no_catalogs: bool, keep: bool) -> None:
    """Run the pipeline with no server at all on real alerts and print a summary.

    Embedded adapters, same pipeline: packet files in, SQLite store and index, one
    .avro-stream file per output topic. Afterwards `albireo serve` shows the result.
    """
    from broker.assemble import embedded_worker
    from broker.ops.samples import demo_inputs

    cfg = load(config_path)
    # the summary lists every rejection; per-message warnings would only repeat it
    setup_logging("ERROR" if cfg.service.log_level == "INFO" else cfg.service.log_level, cfg.service.log_format)
    if workdir.exists() and not keep:
        _clean(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store_path, index_path = demo_store_paths(workdir)
    cfg.store.backend, cfg.store.path = "sqlite", str(store_path)
    cfg.search.backend, cfg.search.path, cfg.search.outbox_path = "sqlite", str(index_path), ""
    if no_catalogs:
        cfg.catalogs.enabled = False
    inputs = list(alerts) or demo_inputs(workdir / "cache")
    click.echo("inputs:\n" + "\n".join(f"  {p}" for p in inputs))

    assembly = embedded_worker(cfg, inputs, workdir / "streams", batch_size=batch_size)
    with assembly:
        with progress_bar(assembly.source.count(), "msg", "demo") as bar:
            summary = assembly.worker.run(on_batch=lambda res: bar.update(res.messages))
        caught_up = assembly.index_writer.close()
        counts = assembly.store.counts()
        n_docs = assembly.index.count()
    click.echo("\n" + summary.render())
    click.echo(f"\nstore: {counts['loci']} loci, {counts['alerts']} alerts, {counts['dead_letters']} dead letters "
               f"in {store_path}")
    click.echo(f"index: {n_docs} locus documents in {index_path}" + ("" if caught_up else " (still draining)"))
    click.echo(f"streams: {workdir / 'streams'}/<topic>.avro-stream ({assembly.sink.count} messages)")
    serve_hint = "albireo serve" if workdir == DEFAULT_WORKDIR else f"albireo serve --workdir {workdir}"
    click.echo(f"browse:  {serve_hint}  (then http://127.0.0.1:8080)")
