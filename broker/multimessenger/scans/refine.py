"""Which pixels each step of a scan evaluates (RING indices, skyreader's ordering).

The first step covers the whole sky. Each later step, as the Skymap Scanner does, looks at the
step before: it keeps its ``best`` lowest-llh pixels and every pixel inside the current 90 % region
(``2·Δllh ≤ 4.61`` plus ``margin``), adds their neighbours (a region edge can cut a pixel whose
centre lies outside), and scans all their children at the next nside. A step never exceeds
``max_pixels``: the children nearest the best pixel are kept.
"""

from __future__ import annotations

import numpy as np

from broker.multimessenger.scans.reconstructions import LEVELS


def full_sky(nside: int) -> np.ndarray:
    return np.arange(12 * nside * nside, dtype=np.int64)


def refine(nside: int, pixels: np.ndarray, llh: np.ndarray, next_nside: int, *, best: int = 12,
           level: float = LEVELS["90"], margin: float = 1.0, max_pixels: int = 20_000) -> np.ndarray:
    """The RING pixels at ``next_nside`` to scan after a step at ``nside`` gave ``llh`` for ``pixels``."""
    import healpy

    pixels = np.asarray(pixels, dtype=np.int64)
    llh = np.asarray(llh, dtype=float)
    ok = np.isfinite(llh)
    if not ok.any():
        return np.zeros(0, dtype=np.int64)
    pixels, llh = pixels[ok], llh[ok]
    order = np.argsort(llh, kind="stable")
    keep = set(pixels[order[:best]].tolist())
    keep.update(pixels[2.0 * (llh - llh[order[0]]) <= level + margin].tolist())
    chosen = np.array(sorted(keep), dtype=np.int64)
    neighbours = healpy.get_all_neighbours(nside, chosen).ravel()
    chosen = np.unique(np.concatenate([chosen, neighbours[neighbours >= 0]]))
    ratio = next_nside // nside
    nest = healpy.ring2nest(nside, chosen)
    children_nest = (nest[:, None] * ratio * ratio + np.arange(ratio * ratio)[None, :]).ravel()
    children = np.unique(healpy.nest2ring(next_nside, children_nest))
    if len(children) > max_pixels:
        best_vec = np.array(healpy.pix2vec(nside, int(pixels[order[0]])))
        vec = np.array(healpy.pix2vec(next_nside, children)).T
        children = np.sort(children[np.argsort(-(vec @ best_vec), kind="stable")[:max_pixels]])
    return children
