"""``albireo catalog ...``: ingest, list and synthesise cross-match catalogs.

Catalogs live under
``--root`` (default: ``[catalogs] root`` of the configuration).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from broker.cli.common import config_option, load
from broker.crossmatch.catalogset import catalog_names, default_catalog_dir
from broker.crossmatch.errors import CatalogError

root_option = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="catalog directory (default: [catalogs] root of the configuration)",
)


def _root(root: Path | None) -> Path:
    return root if root is not None else default_catalog_dir()


@click.group("catalog")
def catalog() -> None:
    """Cross-match catalogs: build indexes, list them, make synthetic ones for benchmarks."""


@catalog.command("ingest")
@click.argument("source", required=False)
@click.option("--name", help="catalog name (a built-in definition, or a new one with --ra/--dec)")
@click.option("--format", "fmt", type=click.Choice(["csv", "fits", "parquet", "hats", "votable"]), default=None)
@click.option("--ra", "ra_col", default=None, help="RA column (degrees) for a new definition")
@click.option("--dec", "dec_col", default=None, help="Dec column (degrees) for a new definition")
@click.option("--columns", default=None, help="comma-separated payload columns to keep (default: all)")
@click.option("--radius", type=float, default=None, help="fixed match radius, arcsec (default 1)")
@click.option("--radius-column", default=None, help="per-object radius column (extended sources)")
@click.option("--radius-scale", type=float, default=1.0, help="multiply --radius-column to get arcsec")
@click.option("--vizier", "vizier_id", default=None, help="download this VizieR catalogue with astroquery")
@click.option("--openngc", is_flag=True, help="(re)build the shipped OpenNGC catalog from pyongc")
@root_option
def ingest_cmd(source, name, fmt, ra_col, dec_col, columns, radius, radius_column, radius_scale, vizier_id,
               openngc, root) -> None:
    """Build a catalog index from SOURCE (CSV, FITS, Parquet, HATS dir, saved VizieR VOTable)."""
    from dataclasses import replace

    from catalogs.definitions import BUILTIN, CatalogDefinition, RadiusPolicy
    from catalogs.ingest import ingest, ingest_vizier

    root = _root(root)
    try:
        if openngc:
            from broker.crossmatch.build import build_index
            from catalogs import openngc as ongc
            from catalogs.definitions import OPENNGC

            path = build_index(root, OPENNGC, lambda: ongc.chunks(), progress=True)
            click.echo(f"built {path}")
            return
        if not name:
            raise click.UsageError("--name is required")
        defn = BUILTIN.get(name) or CatalogDefinition(name=name)
        changes = {}
        if ra_col:
            changes["ra_column"] = ra_col
        if dec_col:
            changes["dec_column"] = dec_col
        if columns:
            changes["columns"] = tuple(c.strip() for c in columns.split(",") if c.strip())
        if radius_column:
            changes["radius"] = RadiusPolicy(kind="column", column=radius_column, scale=radius_scale,
                                             arcsec=radius if radius is not None else 1.0)
        elif radius is not None:
            changes["radius"] = RadiusPolicy(kind="fixed", arcsec=radius)
        if vizier_id:
            changes["vizier"] = vizier_id
        defn = replace(defn, **changes)
        if source is None:
            if not defn.vizier:
                raise click.UsageError("give a SOURCE file or --vizier ID")
            path = ingest_vizier(defn, root, progress=True)
        else:
            path = ingest(source, defn, root, fmt=fmt, progress=True)
    except CatalogError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"built {path}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@catalog.command("list")
@click.option("--verify/--no-verify", default=False, help="check every file's checksum")
@root_option
def list_cmd(verify: bool, root: Path | None) -> None:
    """Show catalogs with rows, size on disk, build date and checksum."""
    from broker.crossmatch.index import CatalogIndex

    root = _root(root)
    names = catalog_names(root)
    if not names:
        click.echo(f"no catalogs under {root} (run `albireo catalog ingest --openngc`)")
        return
    click.echo(f"{'name':<24} {'rows':>13} {'size':>11}  {'built (UTC)':<20} {'radius':<18} {'enabled':<7} checksum")
    for n in names:
        try:
            ix = CatalogIndex.open(root / n, verify=verify)
        except CatalogError as e:
            click.echo(f"{n:<24} BROKEN: {e}")
            continue
        size = sum(f["bytes"] for f in ix.meta["files"].values())
        built = datetime.fromisoformat(ix.meta["built_at"]).strftime("%Y-%m-%d %H:%M:%S")
        pol = ix.definition.radius
        rad = f'{pol.arcsec:g}"' if pol.kind == "fixed" else f"own({pol.column})"
        click.echo(f"{n:<24} {ix.n_rows:>13,} {_human(size):>11}  {built:<20} {rad:<18} "
                   f"{str(ix.definition.enabled):<7} {ix.meta['checksum']}")


@catalog.command("synth")
@click.option("--rows", type=float, required=True, help="number of rows, e.g. 1e8")
@click.option("--name", default=None, help="catalog name (default synth_<rows>)")
@click.option("--seed", type=int, default=0)
@click.option("--enabled", is_flag=True, help="match it in the pipeline (benchmarks of the whole stack)")
@root_option
def synth_cmd(rows: float, name: str | None, seed: int, enabled: bool, root: Path | None) -> None:
    """Generate a synthetic point-source catalog with Milky-Way-like density (disabled for matching).

    Example: ``albireo catalog synth --rows 1e8`` (~2.4 GiB on disk, a few minutes; not committed).
    """
    from broker.crossmatch.build import build_index
    from catalogs import synth

    n = int(rows)
    name = name or f"synth_{n:.0e}".replace("+", "")
    path = build_index(_root(root), synth.definition(name, enabled), lambda: synth.chunks(n, seed), total_rows=n,
                       progress=True)
    click.echo(f"built {path}")



@catalog.command("rematch")
@config_option
def rematch_cmd(config_path: str | None) -> None:
    """Re-match every stored locus whose matches predate the current catalogs (after ingest/rebuild).

    The pipeline re-matches a stale locus when its next alert arrives; this command does it for
    all of them at once, and refreshes their index documents.
    """
    import numpy as np

    from broker.assemble import open_catalogs, open_index, open_index_writer, open_store

    cfg = load(config_path)
    cats = open_catalogs(cfg, build_defaults=False)
    if cats is None:
        raise click.ClickException(f"no catalogs under {cfg.catalogs.root} (or [catalogs] enabled = false)")
    store = open_store(cfg, create=False)
    index = open_index(cfg)
    writer = open_index_writer(cfg, index)
    seen = changed = 0
    try:
        for batch in store.iter_loci():
            seen += len(batch)
            stale = [x for x in batch if x.catalog_version != cats.version]
            if not stale:
                continue
            found = cats.match(np.array([x.ra for x in stale]), np.array([x.dec for x in stale]))
            for locus, rows in zip(stale, found, strict=True):
                locus.catalog_objects = rows
                locus.catalog_version = cats.version
            store.save_batch(stale, [])
            writer.write(stale)
            changed += len(stale)
    finally:
        writer.close()
        index.close()
        store.close()
    click.echo(f"{changed} of {seen} loci re-matched against catalog set {cats.version}")
