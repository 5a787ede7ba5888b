"""CatalogSet: every enabled catalog under one root, matched in one call, shaped as ANTARES loci expect.

``locus.catalog_objects`` in ANTARES (antares-devkit models, its real loci, the ``extragalactic`` filter)
is ``{catalog_name: [ {column: value, ...}, ... ]}`` with a key *only* for catalogs that matched: filters
test ``set(locus.catalog_objects) & {...}`` and read rows as plain dicts of the catalog's own columns,
missing values as ``None``.  We add one key per row, ``match_distance_arcsec``, and order rows nearest
first.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CatalogError
from .index import CatalogIndex

log = logging.getLogger(__name__)

DIST_KEY = "match_distance_arcsec"


def default_catalog_dir() -> Path:
    """The configured catalog root (``[catalogs] root``, ``ALBIREO_CATALOGS__ROOT``)."""
    from broker.config import load_config

    return Path(load_config().catalogs.root)


def catalog_names(root: Path) -> list[str]:
    """Published catalogs: the symlinks/dirs named after a catalog (build dirs carry an ``@``)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and "@" not in p.name)


class CatalogSet:
    """The enabled catalogs of a root directory; ``errors`` holds catalogs that failed to open."""

    def __init__(self, root: Path, indexes: list[CatalogIndex], errors: dict[str, str]) -> None:
        self.root = root
        self.indexes = indexes
        self.errors = errors
        h = hashlib.sha256()
        for ix in indexes:
            h.update(f"{ix.name}:{ix.meta['build_id']}:{ix.meta['checksum']};".encode())
        #: changes whenever a catalog is added, removed or rebuilt: cached matches are stale then
        self.version: str = h.hexdigest()[:16]

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, *, verify: bool = True, strict: bool = False) -> CatalogSet:
        """Open every enabled catalog; a broken one is logged and skipped unless ``strict``."""
        root = Path(root) if root is not None else default_catalog_dir()
        indexes, errors = [], {}
        for name in catalog_names(root):
            try:
                ix = CatalogIndex.open(root / name, verify=verify)
            except CatalogError as e:
                if strict:
                    raise
                log.error("catalog %s skipped: %s", name, e)
                errors[name] = str(e)
                continue
            if ix.definition.enabled:
                indexes.append(ix)
        return cls(root, indexes, errors)

    @property
    def names(self) -> list[str]:
        return [ix.name for ix in self.indexes]

    def match(self, ra: np.ndarray, dec: np.ndarray) -> list[dict[str, list[dict[str, Any]]]]:
        """For each position: catalog name -> matched rows (payload + distance), nearest first."""
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        out: list[dict[str, list[dict[str, Any]]]] = [{} for _ in range(ra.shape[0])]
        for ix in self.indexes:
            q, row, dist = ix.match(ra, dec)
            if q.size == 0:
                continue
            o = np.lexsort((row, dist, q))  # by query, then distance, then row for determinism
            q, row, dist = q[o], row[o], dist[o]
            payload = ix.rows(row)
            for qi, p, d in zip(q.tolist(), payload, dist.tolist(), strict=True):
                p[DIST_KEY] = d
                out[qi].setdefault(ix.name, []).append(p)
        return out


def ensure_default_catalogs(root: str | os.PathLike | None = None, *, progress: bool = False) -> None:
    """Build the OpenNGC index from ``pyongc`` unless a loadable one is already there (idempotent)."""
    from catalogs import openngc
    from catalogs.definitions import OPENNGC

    from .build import build_index

    root = Path(root) if root is not None else default_catalog_dir()
    path = root / OPENNGC.name
    if path.exists():
        try:
            CatalogIndex.open(path, verify=False)
            return
        except CatalogError as e:
            log.warning("rebuilding %s: %s", path, e)
    build_index(root, OPENNGC, lambda: openngc.chunks(), progress=progress)
