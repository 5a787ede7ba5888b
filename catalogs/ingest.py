"""Read catalog files (CSV, FITS, Parquet, HATS, VizieR responses) as chunks for the index builder.

Every reader checks the columns it needs against the file's header *before* reading rows and wraps
library errors (truncated FITS, corrupt Parquet, unparsable CSV fields) into :class:`CatalogError`
naming the file, and the row/column where known.  Heavy optional libraries (pyarrow, hats, astroquery)
are imported only by the path that needs them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from broker.crossmatch.build import Chunk, build_index
from broker.crossmatch.errors import CatalogError

from .definitions import CatalogDefinition

CHUNK_ROWS = 1_000_000
FORMATS = ("csv", "fits", "parquet", "hats", "votable")


def needed_columns(defn: CatalogDefinition, available: list[str]) -> tuple[list[str], list[str]]:
    """(columns to read, payload columns kept) for ``defn`` given the file's columns."""
    payload = list(defn.columns) if defn.columns is not None else list(available)
    need = [defn.ra_column, defn.dec_column, *payload]
    if defn.radius.kind == "column":
        need.append(defn.radius.column)
    return list(dict.fromkeys(need)), payload


def _check(path: str, need: list[str], available: list[str]) -> None:
    missing = [c for c in need if c not in available]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {missing}; file has {list(available)}")


def _numeric(path: str, name: str, values, first_row: int) -> np.ndarray:
    """Coordinates as float64; a non-numeric cell is reported with its row."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        import pandas as pd

        num = pd.to_numeric(pd.Series(values), errors="coerce")
        bad = np.nonzero(num.isna().to_numpy() & pd.Series(values).notna().to_numpy())[0]
        i = int(bad[0]) if bad.size else 0
        raise CatalogError(
            f"{path}: row {first_row + i + 1}: column {name!r} value {values[i]!r} is not a number"
        ) from None


def _make_chunk(path: str, defn: CatalogDefinition, cols: dict, first_row: int) -> Chunk:
    ra = _numeric(path, defn.ra_column, cols[defn.ra_column], first_row)
    dec = _numeric(path, defn.dec_column, cols[defn.dec_column], first_row)
    return Chunk(ra, dec, cols, source=path, first_row=first_row)


# ---------------------------------------------------------------------------------------------- CSV
def _csv_truncation(path: str, n_header: int) -> None:
    """A file cut mid-row ends without a newline and with fewer fields than the header."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            raise CatalogError(f"{path}: empty file")
        f.seek(max(0, size - 65536))
        tail = f.read()
    if tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    nfields = len(last.split(","))
    if nfields < n_header:
        with open(path, "rb") as f:
            nlines = sum(1 for _ in f)
        raise CatalogError(
            f"{path}: row {nlines - 1}: truncated file (last line has {nfields} of {n_header} fields)"
        )


def csv_chunks(path: str, defn: CatalogDefinition, chunk_rows: int = CHUNK_ROWS) -> Callable[[], Iterator[Chunk]]:
    import pandas as pd

    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: not a readable CSV ({e})") from e
    need, _ = needed_columns(defn, header)
    _check(path, need, header)
    _csv_truncation(path, len(header))

    def gen() -> Iterator[Chunk]:
        first = 0
        try:
            for df in pd.read_csv(path, usecols=need, chunksize=chunk_rows, keep_default_na=True):
                cols = {c: df[c].to_numpy() for c in need}
                yield _make_chunk(path, defn, cols, first)
                first += len(df)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise CatalogError(f"{path}: near row {first + 1}: CSV parse error ({e})") from e

    return gen


# ---------------------------------------------------------------------------------------------- FITS
def fits_chunks(path: str, defn: CatalogDefinition, chunk_rows: int = CHUNK_ROWS, hdu: int | None = None):
    from astropy.io import fits

    def open_table():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                hl = fits.open(path, memmap=True)
                idx = hdu if hdu is not None else next(
                    (i for i, h in enumerate(hl) if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
                if idx is None:
                    raise CatalogError(f"{path}: no table HDU")
                data = hl[idx].data
                n = len(data)
                if n:
                    data[n - 1]  # touch the last row: a truncated file fails here
            except CatalogError:
                raise
            except Exception as e:  # astropy raises OSError/ValueError/TypeError/IndexError for damage
                raise CatalogError(f"{path}: unreadable FITS ({type(e).__name__}: {e})") from e
        for w in caught:
            if "truncat" in str(w.message).lower() or "corrupt" in str(w.message).lower():
                raise CatalogError(f"{path}: {w.message}")
        return hl, data

    hl, data = open_table()
    names = list(data.columns.names)
    hl.close()
    need, _ = needed_columns(defn, names)
    _check(path, need, names)

    def gen() -> Iterator[Chunk]:
        hl, data = open_table()
        try:
            for start in range(0, len(data), chunk_rows):
                part = data[start : start + chunk_rows]
                cols = {}
                for c in need:
                    a = np.asarray(part[c])
                    if a.dtype.byteorder not in ("=", "|"):
                        a = a.astype(a.dtype.newbyteorder("="))
                    if a.dtype.kind in "SU":
                        a = np.char.strip(a.astype(str))
                    cols[c] = a
                yield _make_chunk(path, defn, cols, start)
        finally:
            hl.close()

    return gen


# ------------------------------------------------------------------------------------------- Parquet
def _parquet_files_chunks(files: list[str], label: str, defn: CatalogDefinition, chunk_rows: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] | None = None
    for f in files:
        try:
            fnames = pq.ParquetFile(f).schema_arrow.names
        except (pa.ArrowException, OSError) as e:
            raise CatalogError(f"{f}: unreadable Parquet ({e})") from e
        names = fnames if names is None else names
        need, _ = needed_columns(defn, fnames)
        _check(f, need, fnames)
    need, _ = needed_columns(defn, names or [])

    def gen() -> Iterator[Chunk]:
        for f in files:
            first = 0
            try:
                pf = pq.ParquetFile(f)
                for batch in pf.iter_batches(batch_size=chunk_rows, columns=need):
                    cols = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in need}
                    yield _make_chunk(f, defn, cols, first)
                    first += batch.num_rows
            except (pa.ArrowException, OSError) as e:
                raise CatalogError(f"{f}: near row {first + 1}: unreadable Parquet ({e})") from e

    return gen


def parquet_chunks(path: str, defn: CatalogDefinition, chunk_rows: int = CHUNK_ROWS):
    p = Path(path)
    files = sorted(str(f) for f in p.rglob("*.parquet")) if p.is_dir() else [str(p)]
    if not files:
        raise CatalogError(f"{path}: no Parquet files")
    return _parquet_files_chunks(files, path, defn, chunk_rows)


def hats_chunks(path: str, defn: CatalogDefinition, chunk_rows: int = CHUNK_ROWS):
    """A HATS catalog (hats package): its partitions' Parquet files, RA/Dec columns from its properties."""
    import hats
    from hats.io import paths

    try:
        cat = hats.read_hats(path)
    except Exception as e:  # hats raises FileNotFoundError/ValueError/pydantic errors for a bad dir
        raise CatalogError(f"{path}: not a readable HATS catalog ({type(e).__name__}: {e})") from e
    info = cat.catalog_info
    if defn.ra_column != info.ra_column or defn.dec_column != info.dec_column:
        from dataclasses import replace

        defn = replace(defn, ra_column=info.ra_column or defn.ra_column, dec_column=info.dec_column or defn.dec_column)
    files = [str(paths.pixel_catalog_file(cat.catalog_base_dir, px)) for px in cat.get_healpix_pixels()]
    return _parquet_files_chunks(files, path, defn, chunk_rows), defn


# ------------------------------------------------------------------------------------------- VizieR
def vizier_tables(defn: CatalogDefinition, *, response_file: str | None = None, catalog: str | None = None):
    """Tables of a VizieR catalogue via astroquery: downloaded, or parsed from a saved VOTable response.

    The saved-response path runs astroquery's own VizieR parser, so offline tests exercise the same
    table handling as a live download.
    """
    from astroquery.vizier import Vizier
    from astroquery.vizier.core import _parse_vizier_votable

    cat_id = catalog or defn.vizier
    if not cat_id:
        raise CatalogError(f"catalog {defn.name!r} has no VizieR id")
    if response_file is not None:
        try:
            data = Path(response_file).read_bytes()
            tables = _parse_vizier_votable(data)
        except Exception as e:  # astropy.io.votable raises many types for a damaged file
            raise CatalogError(f"{response_file}: not a readable VizieR VOTable ({type(e).__name__}: {e})") from e
    else:
        v = Vizier(columns=["**", "_RAJ2000", "_DEJ2000"], row_limit=-1)
        tables = v.get_catalogs(cat_id)
    if tables is None or len(tables) == 0:
        raise CatalogError(f"VizieR {cat_id}: no tables returned")
    return tables


def table_chunks(table, label: str, defn: CatalogDefinition, chunk_rows: int = CHUNK_ROWS):
    """An astropy Table (e.g. from VizieR) as chunks; masked values become NaN/''."""
    names = list(table.colnames)
    need, _ = needed_columns(defn, names)
    _check(label, need, names)

    def col(c, start, stop):
        a = table[c][start:stop]
        if hasattr(a, "mask") and np.any(a.mask):
            fill = np.nan if a.dtype.kind in "fiu" else ""
            a = a.astype(float) if a.dtype.kind in "iu" else a
            return np.asarray(a.filled(fill))
        return np.asarray(a)

    def gen() -> Iterator[Chunk]:
        for start in range(0, len(table), chunk_rows):
            cols = {c: col(c, start, start + chunk_rows) for c in need}
            yield _make_chunk(label, defn, cols, start)

    return gen


# ---------------------------------------------------------------------------------------------- entry
def detect_format(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "hats.properties").exists() or (p / "properties").exists():
            return "hats"
        return "parquet"
    low = p.name.lower()
    for ext, fmt in ((".csv", "csv"), (".csv.gz", "csv"), (".fits", "fits"), (".fit", "fits"), (".fits.gz", "fits"),
                     (".parquet", "parquet"), (".pq", "parquet"), (".vot", "votable"), (".xml", "votable")):
        if low.endswith(ext):
            return fmt
    raise CatalogError(f"{path}: cannot tell the format from the name; pass --format ({'/'.join(FORMATS)})")


def ingest(
    path: str | os.PathLike,
    defn: CatalogDefinition,
    root: str | os.PathLike,
    *,
    fmt: str | None = None,
    progress: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    order: int | None = None,
) -> Path:
    """Build ``root/<defn.name>`` from a catalog file; returns the published path."""
    path = str(path)
    if not os.path.exists(path):
        raise CatalogError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        gen = csv_chunks(path, defn, chunk_rows)
    elif fmt == "fits":
        gen = fits_chunks(path, defn, chunk_rows)
    elif fmt == "parquet":
        gen = parquet_chunks(path, defn, chunk_rows)
    elif fmt == "hats":
        gen, defn = hats_chunks(path, defn, chunk_rows)
    elif fmt == "votable":
        tables = vizier_tables(defn, response_file=path)
        gen = table_chunks(tables[0], path, defn, chunk_rows)
    else:
        raise CatalogError(f"unknown format {fmt!r}; use one of {FORMATS}")
    return build_index(root, defn, gen, progress=progress, order=order)


def ingest_vizier(defn: CatalogDefinition, root: str | os.PathLike, *, progress: bool = False,
                  catalog: str | None = None) -> Path:
    """Download ``defn.vizier`` with astroquery and build it (needs network access to VizieR)."""
    tables = vizier_tables(defn, catalog=catalog)
    return build_index(root, defn, table_chunks(tables[0], f"VizieR {catalog or defn.vizier}", defn),
                       progress=progress)
