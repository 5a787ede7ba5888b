"""``albireo release``: publish and read the FAIR event catalog's immutable versions.

Not ``albireo catalog``, which builds the cross-match catalogs loci are matched against.

* ``publish [--note TEXT]`` — freeze every changed event record as a new record version and
  publish the next numbered catalog version (``multimessenger.catalog.versions``);
* ``list`` — the published versions;
* ``show [VERSION]`` — one version's events (default the latest; ``live`` for the unpublished state);
* ``export VERSION --table events|associations --format fits|vot|csv|ecsv|parquet|json --out FILE``.
"""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import config_option, load

_WORKDIR = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Use the store and index of `albireo demo --workdir DIR` (default: the configured ones).")


def _open(config_path: str | None, workdir: Path | None):
    from broker.assemble import StoreMissing, open_index, open_store
    from broker.cli.notices import _point_at_workdir
    from broker.multimessenger.catalog.versions import CatalogSettings, EventCatalog

    cfg = load(config_path)
    _point_at_workdir(cfg, workdir)
    try:
        store = open_store(cfg, create=False)
        index = open_index(cfg, create=False)
    except StoreMissing as exc:
        raise click.ClickException(f"{exc}: ingest notices first") from exc
    return EventCatalog(store, index, CatalogSettings.from_config(cfg))


def _close(cat) -> None:
    cat.store.close()
    cat.index.close()


def _version(cat, text: str | None):
    if text in (None, "latest"):
        rel = cat.latest_release()
        if rel is None:
            raise click.ClickException("no catalog version has been published yet: albireo release publish")
        return rel
    if text == "live":
        return None
    try:
        rel = cat.release(int(text))
    except ValueError:
        raise click.ClickException(f"version {text!r}: a number, 'latest' or 'live'") from None
    if rel is None:
        raise click.ClickException(f"no catalog version {text}")
    return rel


@click.group("release")
def release_group() -> None:
    """The FAIR event catalog: publish immutable numbered versions, list, show and export them."""


@release_group.command("publish")
@config_option
@_WORKDIR
@click.option("--note", default="", help="A line saying why this version was published (kept with it).")
def publish(config_path: str | None, workdir: Path | None, note: str) -> None:
    """Freeze changed event records and publish the next catalog version (earlier ones never change)."""
    from broker.ports import CatalogConflict

    cat = _open(config_path, workdir)
    try:
        try:
            rel = cat.publish(note)
        except CatalogConflict as exc:
            raise click.ClickException(f"{exc}: run it again") from exc
    finally:
        _close(cat)
    ch = rel["changes"]
    click.echo(f"published {rel['pid']}{' (DOI ' + rel['doi'] + ')' if rel.get('doi') else ''}: {rel['n_events']} "
               f"event(s), {rel['n_associations']} association(s); {len(ch['added'])} new, {len(ch['updated'])} "
               f"updated, {ch['unchanged']} unchanged; licence {rel['license']}")


@release_group.command("list")
@config_option
@_WORKDIR
def list_versions(config_path: str | None, workdir: Path | None) -> None:
    """The published catalog versions, oldest first."""
    cat = _open(config_path, workdir)
    try:
        rels = cat.releases()
    finally:
        _close(cat)
    if not rels:
        click.echo("no catalog version published yet (albireo release publish)")
    for r in rels:
        click.echo(f"v{r['version']:<4} {r['published']}  {r['n_events']:>5} events {r['n_associations']:>6} "
                   f"associations  albireo {r['pipeline_version']}  {r['note']}")


@release_group.command("show")
@click.argument("version", required=False)
@config_option
@_WORKDIR
def show(version: str | None, config_path: str | None, workdir: Path | None) -> None:
    """One version's event records (VERSION: a number, latest (default) or live)."""
    cat = _open(config_path, workdir)
    try:
        rel = _version(cat, version)
        recs = cat.release_records(rel) if rel is not None else cat.live_records()
    finally:
        _close(cat)
    click.echo(f"catalog {rel['pid'] if rel else 'live (unpublished)'}: {len(recs)} event(s)")
    for r in recs:
        pos = "-" if r.get("ra") is None else f"{r['ra']:9.4f} {r['dec']:+8.4f}"
        area = "-" if r.get("area90") is None else f"{r['area90']:.3g}"
        click.echo(f"  {r['pid']:<48} {r['status']:<9} {pos:>18}  A90 {area:>8} deg2  "
                   f"{r['n_associations']} association(s)")


@release_group.command("export")
@click.argument("version")
@config_option
@_WORKDIR
@click.option("--table", "which", type=click.Choice(["events", "associations"]), default="events", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["fits", "vot", "csv", "ecsv", "parquet", "json"]), default="fits",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
def export_cmd(version: str, config_path: str | None, workdir: Path | None, which: str, fmt: str, out: Path) -> None:
    """Write one table of a version (a number, latest or live) with units, UCDs and the licence."""
    from broker.multimessenger.catalog.exports import export, release_meta

    cat = _open(config_path, workdir)
    try:
        rel = _version(cat, version)
        data = export(cat.release_records(rel) if rel is not None else cat.live_records(), which, fmt,
                      release_meta(rel, cat.settings))
    finally:
        _close(cat)
    out.write_bytes(data)
    click.echo(f"wrote {out} ({len(data)} bytes)")
