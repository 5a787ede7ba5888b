"""Catalog cross-matching: pixel-sorted memory-mapped indexes and numba batch kernels.

Public API: :class:`CatalogIndex` (one catalog), :class:`CatalogSet` (every enabled catalog under a
root directory, shaped output for ``locus.catalog_objects``), :func:`ensure_default_catalogs`.
"""

from .build import Chunk, build_index, choose_order
from .catalogset import CatalogSet, default_catalog_dir, ensure_default_catalogs
from .errors import CatalogError
from .index import CatalogIndex

__all__ = [
    "CatalogError",
    "CatalogIndex",
    "CatalogSet",
    "Chunk",
    "build_index",
    "choose_order",
    "default_catalog_dir",
    "ensure_default_catalogs",
]
