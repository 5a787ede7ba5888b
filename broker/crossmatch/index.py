"""CatalogIndex: a pixel-sorted, memory-mapped catalog and the batch queries the pipeline runs on it.

Workers open the same files read-only with ``mmap``: the OS shares the pages between processes, so N
workers on a 10^8-row catalog cost one copy in the page cache, not N copies in RAM.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from catalogs.definitions import CatalogDefinition

from .build import FORMAT, MANIFEST, _crc32
from .errors import CatalogError
from .healpix import FACE_SIDE_RAD_LOWER
from .kernels import ARCSEC, cone_kernel, hav_to_arcsec, nearest_kernel

_EMPTY = np.zeros(0, dtype=np.float64)


@nb.njit(cache=True)
def _brute_big(qra_deg, qdec_deg, big_rows, ra_deg, dec_deg, radius, h_skip):
    """Rows too big for the pixel search (a few huge galaxies) are checked against every query."""
    d2r = math.pi / 180.0
    nq = qra_deg.shape[0]
    out_q = []
    out_r = []
    out_h = []
    for q in range(nq):
        ra1 = qra_deg[q] * d2r
        dec1 = qdec_deg[q] * d2r
        if not (math.isfinite(ra1) and math.isfinite(dec1)):
            continue
        for row in big_rows:
            dec2 = dec_deg[row] * d2r
            sdd = math.sin(0.5 * (dec2 - dec1))
            sda = math.sin(0.5 * (ra_deg[row] * d2r - ra1))
            h = sdd * sdd + math.cos(dec1) * math.cos(dec2) * sda * sda
            so = math.sin(0.5 * radius[row] * math.pi / 648000.0)
            if h <= so * so and h > h_skip:
                out_q.append(q)
                out_r.append(row)
                out_h.append(h)
    return np.array(out_q, dtype=np.int64), np.array(out_r, dtype=np.int64), np.array(out_h, dtype=np.float64)


def _as_positions(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    ra = np.ascontiguousarray(np.atleast_1d(np.asarray(ra, dtype=np.float64)))
    dec = np.ascontiguousarray(np.atleast_1d(np.asarray(dec, dtype=np.float64)))
    if ra.shape != dec.shape or ra.ndim != 1:
        raise ValueError(f"ra and dec must be 1-d arrays of equal length, got {ra.shape} and {dec.shape}")
    return ra, dec


class CatalogIndex:
    """One built catalog. Use :meth:`open`; row indices refer to the pixel-sorted order on disk."""

    def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = manifest
        self.definition = CatalogDefinition.from_dict(manifest["definition"])
        self.name: str = manifest["name"]
        self.order: int = int(manifest["order"])
        self.n_rows: int = int(manifest["rows"])
        self.ra: np.ndarray = arrays["ra"]
        self.dec: np.ndarray = arrays["dec"]
        self.offsets: np.ndarray = arrays["offsets"]
        self.radius: np.ndarray | None = arrays.get("radius")
        self._columns = {k: v for k, v in arrays.items() if k.startswith("col:")}
        self._big_rows = np.zeros(0, dtype=np.int64)
        self._search_radius = 0.0
        if self.radius is not None:
            # radius above which an object is searched brute-force rather than widening every cone
            split = FACE_SIDE_RAD_LOWER / (1 << self.order) / ARCSEC * 0.999
            big = np.nonzero(self.radius > split)[0]
            if big.size > 256:  # many huge objects: a wide cone is cheaper than a long brute list
                big = big[:0]
            self._big_rows = big.astype(np.int64)
            rest = np.ones(self.n_rows, dtype=bool)
            rest[self._big_rows] = False
            self._search_radius = float(self.radius[rest].max()) if rest.any() else 0.0

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True) -> CatalogIndex:
        """Memory-map a built index; ``verify`` checks every file's CRC32 against the manifest.

        Raises :class:`CatalogError` naming the file for a missing manifest (unfinished build), a
        truncated or altered file, or inconsistent row counts.
        """
        path = Path(path)
        real = path.resolve()  # pin one build even if a rebuild swaps the link meanwhile
        mp = real / MANIFEST
        try:
            manifest = json.loads(mp.read_text())
        except FileNotFoundError:
            raise CatalogError(f"{mp}: no manifest; not a catalog index or an unfinished build") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(f"{mp}: corrupt manifest ({e})") from e
        if manifest.get("format") != FORMAT:
            raise CatalogError(f"{mp}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
        for fn, info in manifest["files"].items():
            fp = real / fn
            if not fp.exists():
                raise CatalogError(f"{fp}: missing file listed in the manifest")
            size = fp.stat().st_size
            if size != info["bytes"]:
                raise CatalogError(f"{fp}: size {size} bytes, manifest says {info['bytes']} (truncated?)")
            if verify and _crc32(fp) != info["crc32"]:
                raise CatalogError(f"{fp}: checksum mismatch (file altered or corrupt)")
        n = int(manifest["rows"])
        arrays: dict[str, np.ndarray] = {}

        def load(key: str, fn: str, rows: int) -> None:
            fp = real / fn
            try:
                a = np.load(fp, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise CatalogError(f"{fp}: unreadable ({e})") from e
            if a.shape != (rows,):
                raise CatalogError(f"{fp}: shape {a.shape}, manifest expects ({rows},)")
            arrays[key] = a.view(np.ndarray)

        load("ra", "ra.npy", n)
        load("dec", "dec.npy", n)
        load("offsets", "offsets.npy", 12 * 4 ** int(manifest["order"]) + 1)
        if manifest.get("radius_file"):
            load("radius", manifest["radius_file"], n)
        for c, info in manifest["columns"].items():
            load("col:" + c, info["file"], n)
        if arrays["offsets"][-1] != n:
            raise CatalogError(f"{real / 'offsets.npy'}: covers {arrays['offsets'][-1]} rows, manifest says {n}")
        return cls(real, manifest, arrays)

    @property
    def columns(self) -> list[str]:
        return [k[4:] for k in self._columns]

    @property
    def fixed_radius_arcsec(self) -> float:
        """The definition's match radius for point-source catalogs (fallback radius for extended ones)."""
        return float(self.definition.radius.arcsec)

    # ------------------------------------------------------------------ queries
    def cone(
        self, ra_deg: np.ndarray, dec_deg: np.ndarray, radius_arcsec: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, row) pair closer than ``radius_arcsec``; returns (query_idx, row_idx, dist_arcsec)."""
        ra, dec = _as_positions(ra_deg, dec_deg)
        r = float(radius_arcsec)
        if not (r >= 0):
            raise ValueError(f"radius must be >= 0 arcsec, got {radius_arcsec}")
        q, row, h = cone_kernel(ra, dec, r, self.order, self.offsets, self.ra, self.dec, _EMPTY)
        return q, row, hav_to_arcsec(h)

    def nearest(
        self, ra_deg: np.ndarray, dec_deg: np.ndarray, max_radius_arcsec: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Closest row within ``max_radius_arcsec`` per position: (row_idx or -1, dist_arcsec or inf)."""
        ra, dec = _as_positions(ra_deg, dec_deg)
        row, h = nearest_kernel(ra, dec, float(max_radius_arcsec), self.order, self.offsets, self.ra, self.dec)
        dist = np.full(row.shape[0], np.inf)
        hit = row >= 0
        dist[hit] = hav_to_arcsec(h[hit])
        return row, dist

    def within_own_radius(
        self, ra_deg: np.ndarray, dec_deg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs where the position lies inside the row's own radius (extended sources), sorted by query."""
        if self.radius is None:
            return self.cone(ra_deg, dec_deg, self.fixed_radius_arcsec)
        ra, dec = _as_positions(ra_deg, dec_deg)
        q, row, h = cone_kernel(ra, dec, self._search_radius, self.order, self.offsets, self.ra, self.dec,
                                self.radius)
        if self._big_rows.size:
            s = math.sin(0.5 * self._search_radius * ARCSEC)
            bq, brow, bh = _brute_big(ra, dec, self._big_rows, self.ra, self.dec, self.radius, s * s)
            q = np.concatenate([q, bq])
            row = np.concatenate([row, brow])
            h = np.concatenate([h, bh])
            o = np.argsort(q, kind="stable")
            q, row, h = q[o], row[o], h[o]
        return q, row, hav_to_arcsec(h)

    def match(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the definition's radius policy: own radius for extended sources, else the fixed cone."""
        if self.definition.radius.kind == "column":
            return self.within_own_radius(ra_deg, dec_deg)
        return self.cone(ra_deg, dec_deg, self.fixed_radius_arcsec)

    # ------------------------------------------------------------------ payload
    def rows(self, row_idx: np.ndarray) -> list[dict[str, Any]]:
        """Payload dicts (plain Python values, NaN -> None as ANTARES serves them) for ``row_idx``."""
        idx = np.asarray(row_idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"{self.name}: row index out of range 0..{self.n_rows - 1}")
        cols = {k[4:]: v[idx].tolist() for k, v in self._columns.items()}
        out = []
        for i in range(idx.shape[0]):
            d = {}
            for c, vals in cols.items():
                v = vals[i]
                d[c] = None if isinstance(v, float) and math.isnan(v) else v
            out.append(d)
        return out

    def __repr__(self) -> str:
        return f"CatalogIndex({self.name!r}, rows={self.n_rows}, order={self.order}, path={str(self.path)!r})"
