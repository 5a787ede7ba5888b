"""OpenNGC (NGC/IC objects with sizes) from the ``pyongc`` package: the catalog every install has.

pyongc stores RA/Dec in radians and the major axis (diameter) in arcmin; we index degrees and match
each object inside its semi-major axis (``majax * 30`` arcsec), as ANTARES does for RC3.  Duplicate
entries (type ``Dup``, which point at another entry) and objects that do not exist (``NonEx``) are left
out: they would otherwise produce a second, misleading match at the same position.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from broker.crossmatch.build import Chunk

from .definitions import OPENNGC

DROPPED_TYPES = ("Dup", "NonEx")


def load_frame():
    """The OpenNGC table as a DataFrame with RA/Dec in degrees (rows without positions dropped)."""
    from pyongc import data

    df = data.all()
    df = df[~df["type"].isin(DROPPED_TYPES)]
    df = df[np.isfinite(df["ra"].to_numpy(float)) & np.isfinite(df["dec"].to_numpy(float))].copy()
    df["ra"] = np.degrees(df["ra"].to_numpy(float))
    df["dec"] = np.degrees(df["dec"].to_numpy(float))
    return df.reset_index(drop=True)


def chunks(df=None) -> Iterator[Chunk]:
    """One chunk with the definition's columns (OpenNGC is small)."""
    from pyongc import DBPATH

    df = load_frame() if df is None else df
    cols = {c: df[c].to_numpy() for c in OPENNGC.columns}
    yield Chunk(df["ra"].to_numpy(float), df["dec"].to_numpy(float), cols, source=str(DBPATH), first_row=0)
