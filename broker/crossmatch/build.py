"""Build a :class:`~broker.crossmatch.index.CatalogIndex` on disk from chunks of rows, atomically.

Why this shape: catalogs reach 10^8 rows, so nothing here holds the whole catalog in RAM.  Rows arrive
in chunks (from CSV/FITS/Parquet/HATS readers or the synthetic generator), are validated, counted per
HEALPix pixel (pass 1) and scattered straight into their sorted position in memory-mapped output files
(pass 2, a counting sort: O(N), stable).  The build happens in a hidden temporary directory, every file
is fsynced, the manifest (row count + CRC32 of every file) is written last, and the directory is renamed
into place and published by atomically replacing a symlink.  A crash or a bad row at any point leaves
no loadable index: a directory without a valid manifest is never opened.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numba as nb
import numpy as np
from numpy.lib.format import open_memmap

from catalogs.definitions import CatalogDefinition

from .errors import CatalogError
from .healpix import MAX_ORDER, ang2pix_nest

FORMAT = "albireo-catalog/1"
MANIFEST = "manifest.json"


@dataclass
class Chunk:
    """A block of consecutive rows from one source file; ``first_row`` is 0-based within that file."""

    ra: np.ndarray
    dec: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"
    first_row: int = 0


def choose_order(n_rows: int) -> int:
    """Deepest order whose dense pixel table has at most one entry per two rows.

    ~2-5 rows per pixel keeps a 1" cone to one short contiguous run, and the int64 offset table to
    <= 4 bytes per row (the issue's budget is 16).
    """
    k = 0
    while k < MAX_ORDER and 12 * 4 ** (k + 1) <= n_rows / 2:
        k += 1
    return k


def _row_error(chunk: Chunk, i: int, what: str) -> CatalogError:
    return CatalogError(f"{chunk.source}: row {chunk.first_row + int(i) + 1}: {what}")


def validate_positions(chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """Float64 degrees with RA wrapped to [0, 360); raises naming the first bad row."""
    try:
        ra = np.asarray(chunk.ra, dtype=np.float64)
        dec = np.asarray(chunk.dec, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CatalogError(f"{chunk.source}: rows {chunk.first_row + 1}..: non-numeric coordinates ({e})") from e
    bad = ~np.isfinite(ra)
    if bad.any():
        raise _row_error(chunk, np.argmax(bad), f"RA is {float(ra[np.argmax(bad)])} (NaN/inf coordinates)")
    bad = ~np.isfinite(dec)
    if bad.any():
        raise _row_error(chunk, np.argmax(bad), f"Dec is {float(dec[np.argmax(bad)])} (NaN/inf coordinates)")
    bad = (dec < -90.0) | (dec > 90.0)
    if bad.any():
        raise _row_error(chunk, np.argmax(bad), f"Dec {float(dec[np.argmax(bad)])} outside [-90, 90]")
    ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0
    return ra, dec


def row_radii(defn: CatalogDefinition, chunk: Chunk) -> np.ndarray | None:
    """Per-row match radius in arcsec for ``column`` policies (fallback for missing sizes)."""
    pol = defn.radius
    if pol.kind != "column":
        return None
    col = chunk.columns.get(pol.column)
    if col is None:
        raise CatalogError(f"{chunk.source}: radius column {pol.column!r} missing")
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.asarray(col, dtype=np.float64)
        r = (10.0**v if pol.log10 else v) * pol.scale
    good = np.isfinite(r) & (r > 0)
    return np.where(good, r, pol.arcsec)


def _storable(name: str, a: np.ndarray, chunk: Chunk) -> np.ndarray:
    """Payload columns must be fixed-size dtypes so they can be memory-mapped."""
    a = np.asarray(a)
    if a.dtype.kind in "biuf":
        return a
    if a.dtype.kind == "M":
        return a.astype("datetime64[us]")
    if a.dtype.kind in "US":
        return a.astype(str)
    out = np.array(["" if (x is None or (isinstance(x, float) and math.isnan(x))) else str(x) for x in a])
    return out.astype(str) if out.size else np.zeros(0, dtype="U1")


@nb.njit(cache=True)
def _histogram(pix: np.ndarray, counts: np.ndarray) -> None:
    for p in pix:
        counts[p] += 1


@nb.njit(cache=True)
def _destinations(pix: np.ndarray, cursor: np.ndarray) -> np.ndarray:
    out = np.empty(pix.shape[0], dtype=np.int64)
    for i in range(pix.shape[0]):
        out[i] = cursor[pix[i]]
        cursor[pix[i]] += 1
    return out


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                return crc
            crc = zlib.crc32(b, crc)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_index(
    root: str | os.PathLike,
    definition: CatalogDefinition,
    chunks: Callable[[], Iterable[Chunk]],
    *,
    order: int | None = None,
    progress: bool = False,
    total_rows: int | None = None,
) -> Path:
    """Build and atomically publish ``root/<definition.name>``; returns the published path.

    ``chunks`` is called once per pass (2 passes, 3 when ``total_rows`` is unknown) and must yield the
    same rows in the same order each time.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    build_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    tmp = root / f".build-{definition.name}-{build_id}"
    tmp.mkdir()
    try:
        manifest = _build_into(tmp, definition, chunks, order, progress, total_rows, build_id)
        final = root / f"{definition.name}@{build_id}"
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link = root / definition.name
    if link.exists() and not link.is_symlink():
        raise CatalogError(f"{link}: exists and is not an albireo catalog link; refusing to replace it")
    tmp_link = root / f".link-{definition.name}-{build_id}"
    os.symlink(final.name, tmp_link)
    os.replace(tmp_link, link)  # atomic publish: readers see the old or the new build, never a mix
    _fsync_dir(root)
    for old in root.glob(f"{definition.name}@*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)  # open mmaps of old builds stay valid on POSIX
    del manifest
    return link


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True, leave=False)


def _build_into(tmp, defn, chunks, order, progress, total_rows, build_id) -> dict:
    # pass 1: validate every row, learn the row count, dtypes and string widths
    n = 0
    kinds: dict[str, np.dtype] = {}
    want = list(defn.columns) if defn.columns is not None else None
    bar = _progress(total_rows, f"{defn.name}: validate", progress)
    counts = None
    if total_rows is not None:
        order = choose_order(total_rows) if order is None else order
        counts = np.zeros(12 * 4**order, dtype=np.int64)
    for ch in chunks():
        ra, dec = validate_positions(ch)
        if want is None:
            want = list(ch.columns)
        missing = [c for c in want if c not in ch.columns]
        if missing:
            raise CatalogError(f"{ch.source}: missing column(s) {missing} (has {sorted(ch.columns)})")
        row_radii(defn, ch)
        for c in want:
            a = _storable(c, ch.columns[c], ch)
            if a.shape[0] != ra.shape[0]:
                raise CatalogError(f"{ch.source}: column {c!r} has {a.shape[0]} rows, coordinates {ra.shape[0]}")
            prev = kinds.get(c)
            kinds[c] = a.dtype if prev is None else np.promote_types(prev, a.dtype)
        if counts is not None:
            _histogram(ang2pix_nest(ra, dec, order), counts)
        n += ra.shape[0]
        if bar is not None:
            bar.update(ra.shape[0])
    if bar is not None:
        bar.close()
    if n == 0:
        raise CatalogError(f"catalog {defn.name!r}: no rows")
    if total_rows is not None and n != total_rows:
        raise CatalogError(f"catalog {defn.name!r}: expected {total_rows} rows, sources gave {n}")
    if counts is None:
        order = choose_order(n) if order is None else order
        counts = np.zeros(12 * 4**order, dtype=np.int64)
        for ch in chunks():
            ra, dec = validate_positions(ch)
            _histogram(ang2pix_nest(ra, dec, order), counts)
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    del counts
    np.save(tmp / "offsets.npy", offsets)

    # pass 2: counting-sort scatter into memory-mapped outputs
    files = {"ra": "ra.npy", "dec": "dec.npy"}
    outs = {
        "ra": open_memmap(tmp / "ra.npy", mode="w+", dtype=np.float64, shape=(n,)),
        "dec": open_memmap(tmp / "dec.npy", mode="w+", dtype=np.float64, shape=(n,)),
    }
    if defn.radius.kind == "column":
        files["radius"] = "radius.npy"
        outs["radius"] = open_memmap(tmp / "radius.npy", mode="w+", dtype=np.float64, shape=(n,))
    colfiles = {}
    for i, c in enumerate(want):
        fn = f"col{i:03d}.npy"
        colfiles[c] = fn
        outs["col:" + c] = open_memmap(tmp / fn, mode="w+", dtype=kinds[c], shape=(n,))
    cursor = offsets[:-1].copy()
    bar = _progress(n, f"{defn.name}: index", progress)
    seen = 0
    for ch in chunks():
        ra, dec = validate_positions(ch)
        dest = _destinations(ang2pix_nest(ra, dec, order), cursor)
        outs["ra"][dest] = ra
        outs["dec"][dest] = dec
        if "radius" in outs:
            outs["radius"][dest] = row_radii(defn, ch)
        for c in want:
            outs["col:" + c][dest] = _storable(c, ch.columns[c], ch)
        seen += ra.shape[0]
        if bar is not None:
            bar.update(ra.shape[0])
    if bar is not None:
        bar.close()
    if seen != n or not np.array_equal(cursor, offsets[1:]):
        raise CatalogError(f"catalog {defn.name!r}: sources changed between passes ({n} then {seen} rows)")
    for a in outs.values():
        a.flush()
    del outs
    allfiles = {**{k: v for k, v in files.items()}, "offsets": "offsets.npy"}
    sums = {}
    for fn in list(allfiles.values()) + list(colfiles.values()):
        p = tmp / fn
        _fsync_file(p)
        sums[fn] = {"bytes": p.stat().st_size, "crc32": _crc32(p)}
    checksum = format(zlib.crc32(json.dumps(sums, sort_keys=True).encode()), "08x")
    manifest = {
        "format": FORMAT,
        "name": defn.name,
        "definition": defn.to_dict(),
        "rows": int(n),
        "order": int(order),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_id": build_id,
        "files": sums,
        "columns": {c: {"file": fn, "dtype": str(kinds[c])} for c, fn in colfiles.items()},
        "radius_file": files.get("radius"),
        "checksum": checksum,
    }
    mp = tmp / MANIFEST
    with open(mp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    return manifest
