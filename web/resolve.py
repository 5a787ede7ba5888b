"""Object names → sky positions, from our own catalogs (no network: OpenNGC ships with pyongc).

Accepted spellings: ``NGC 224``, ``NGC0224``, ``ngc224``, ``M31``, ``M 31``, ``IC 1101``, a common
name (``Andromeda Galaxy``), or an identifier listed by the catalog (``UGC 00454``, ``PGC 002557``).
A locus id (``ALB…``) or survey object id (``ZTF18…``) is resolved by the caller through the index.
The table is built once per catalog set (14k rows: milliseconds) and kept.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

_lock = threading.Lock()
_cache: dict[int, dict[str, tuple[float, float, str, str]]] = {}


def normalise(name: str) -> str:
    """Upper case, no spaces; catalogue numbers without leading zeros (``NGC0224`` → ``NGC224``)."""
    s = re.sub(r"[\s_]+", "", str(name).upper())
    m = re.match(r"^(NGC|IC|M|MESSIER|UGC|PGC|MCG)([+-]?)0*(\d.*)$", s)
    if m:
        prefix = "M" if m.group(1) == "MESSIER" else m.group(1)
        return f"{prefix}{m.group(2)}{m.group(3)}"
    return s


def _table(catalogs: Any) -> dict[str, tuple[float, float, str, str]]:
    key = id(catalogs)
    with _lock:
        if key in _cache:
            return _cache[key]
        table: dict[str, tuple[float, float, str, str]] = {}
        for ix in getattr(catalogs, "indexes", []):
            rows = ix.rows(np.arange(ix.n_rows))
            for r in rows:
                name = r.get("name") or r.get("object_name")
                if r.get("ra") is None or r.get("dec") is None or not name:
                    continue
                entry = (float(r["ra"]), float(r["dec"]), ix.name, str(name))
                keys = {normalise(name)}
                if r.get("messier"):
                    keys.add(normalise(f"M{r['messier']}"))
                for field in ("commonnames", "identifiers"):
                    for alias in str(r.get(field) or "").split(","):
                        if alias.strip():
                            keys.add(normalise(alias))
                for k in keys:
                    table.setdefault(k, entry)
        _cache[key] = table
        return table


def resolve_name(catalogs: Any, name: str) -> tuple[float, float, str, str] | None:
    """(ra, dec, catalog, canonical name) or None when no catalog knows the name."""
    if catalogs is None or not str(name).strip():
        return None
    return _table(catalogs).get(normalise(name))
