"""Cross-match benchmark: our numba kernel vs astropy search_around_sky vs a healpy.query_disc loop.

All three run in one process on the same random-order positions against the same synthetic catalogs
(Milky-Way-like density, built with ``albireo catalog synth``-equivalent code and reused between runs).
Printed per catalog size and radius: queries/s (single core; our kernel is not parallel), ratios against
the baselines, pairs found, index overhead per row and peak RSS.

    python bench/bench_crossmatch.py --quick     # 10^6 rows, < 1 minute
    python bench/bench_crossmatch.py --full      # 10^6, 10^7, 10^8 rows (builds ~2.4 GiB; many minutes)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.crossmatch.build import build_index  # noqa: E402
from broker.crossmatch.errors import CatalogError  # noqa: E402
from broker.crossmatch.index import CatalogIndex  # noqa: E402
from catalogs import synth  # noqa: E402


def rss_mib() -> tuple[float, float]:
    import psutil

    cur = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def get_catalog(root: Path, n: int) -> CatalogIndex:
    name = f"bench_synth_{n}"
    try:
        return CatalogIndex.open(root / name, verify=False)
    except CatalogError:
        t = time.perf_counter()
        build_index(root, synth.definition(name), lambda: synth.chunks(n, seed=42), total_rows=n, progress=True)
        print(f"  built {name} in {time.perf_counter() - t:.1f} s", flush=True)
        return CatalogIndex.open(root / name, verify=False)


def bench_ours(ix: CatalogIndex, ra, dec, r: float, repeat: int = 3):
    ix.cone(ra[:100], dec[:100], r)  # JIT warm-up (compiled code is cached on disk anyway)
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        q, row, _ = ix.cone(ra, dec, r)
        best = min(best, time.perf_counter() - t)
    return ra.shape[0] / best, q, row


def bench_astropy(ix: CatalogIndex, ra, dec, r: float, tree_cache: dict):
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    if "cat" not in tree_cache:
        t = time.perf_counter()
        cat = SkyCoord(np.asarray(ix.ra) * u.deg, np.asarray(ix.dec) * u.deg)
        # build the KD-tree once, outside the timing (astropy caches it on the catalog object)
        search_around_sky(SkyCoord([0.0] * u.deg, [0.0] * u.deg), cat, 1 * u.arcsec)
        tree_cache["cat"] = cat
        tree_cache["build_s"] = time.perf_counter() - t
    cat = tree_cache["cat"]
    qc = SkyCoord(ra * u.deg, dec * u.deg)
    t = time.perf_counter()
    i1, i2, _, _ = search_around_sky(qc, cat, r * u.arcsec)
    return ra.shape[0] / (time.perf_counter() - t), i1, i2


def bench_healpy(ix: CatalogIndex, ra, dec, r: float):
    import healpy as hp

    nside = 1 << ix.order
    offs = ix.offsets
    cra, cdec = ix.ra, ix.dec
    rr = np.radians(r / 3600.0)
    vecs = hp.ang2vec(ra, dec, lonlat=True)
    pairs = []
    t = time.perf_counter()
    for i in range(ra.shape[0]):
        pix = hp.query_disc(nside, vecs[i], rr, inclusive=True, nest=True)
        rows = np.concatenate([np.arange(offs[p], offs[p + 1]) for p in pix]) if pix.size else np.zeros(0, int)
        if rows.size:
            d1, d2 = np.radians(dec[i]), np.radians(cdec[rows])
            h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(np.radians(cra[rows] - ra[i]) / 2) ** 2
            for row in rows[h <= np.sin(rr / 2) ** 2]:
                pairs.append((i, int(row)))
    return ra.shape[0] / (time.perf_counter() - t), pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10^6 rows only")
    ap.add_argument("--full", action="store_true", help="10^6, 10^7, 10^8 rows")
    ap.add_argument("--sizes", default=None, help="comma-separated row counts (overrides --quick/--full)")
    ap.add_argument("--queries", type=float, default=1e6, help="positions for our kernel")
    ap.add_argument("--astropy-queries", type=float, default=2e4, help="positions for search_around_sky")
    ap.add_argument("--healpy-queries", type=float, default=2e3, help="positions for the query_disc loop")
    ap.add_argument("--radii", default="1,10,60")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("ALBIREO_BENCH_DIR", "/tmp/albireo-bench")))
    a = ap.parse_args(argv)
    sizes = [int(float(s)) for s in a.sizes.split(",")] if a.sizes else (
        [10**6, 10**7, 10**8] if a.full else [10**6])
    radii = [float(r) for r in a.radii.split(",")]
    rng = np.random.default_rng(2024)
    nq = int(a.queries)
    ra = rng.uniform(0.0, 360.0, nq)  # random order, uniform on the sphere
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, nq)))
    na, nh = min(nq, int(a.astropy_queries)), min(nq, int(a.healpy_queries))
    print(f"positions: {nq:,} random (astropy on the first {na:,}, healpy loop on the first {nh:,}); "
          f"1 core; radii {radii} arcsec", flush=True)
    hdr = (f"{'rows':>11} {'r_as':>4} {'ours q/s':>12} {'astropy q/s':>12} {'healpy q/s':>11} "
           f"{'x astropy':>9} {'x healpy':>9} {'pairs':>9} {'agree':>5}")
    results = []
    for n in sizes:
        ix = get_catalog(a.root, n)
        overhead = ix.offsets.nbytes / ix.n_rows
        print(f"\ncatalog {n:,} rows: order {ix.order}, index overhead {overhead:.2f} B/row beyond the "
              f"16 B/row coordinates", flush=True)
        print(hdr, flush=True)
        tree: dict = {}
        for r in radii:
            ours, q, row = bench_ours(ix, ra, dec, r)
            if not tree:  # before astropy's KD-tree exists for this catalog
                _, peak_ours = rss_mib()
            ast, i1, i2 = bench_astropy(ix, ra[:na], dec[:na], r, tree)
            hpy, hp_pairs = bench_healpy(ix, ra[:nh], dec[:nh], r)
            sel = q < na
            agree = set(zip(q[sel].tolist(), row[sel].tolist(), strict=True)) == set(zip(i1.tolist(), i2.tolist(), strict=True))
            selh = q < nh
            agree &= set(zip(q[selh].tolist(), row[selh].tolist(), strict=True)) == set(hp_pairs)
            print(f"{n:>11,} {r:>4g} {ours:>12,.0f} {ast:>12,.0f} {hpy:>11,.0f} {ours / ast:>9.1f} "
                  f"{ours / hpy:>9.1f} {q.size:>9,} {str(agree):>5}", flush=True)
            results.append((n, r, ours, ast, hpy, agree))
        cur, peak = rss_mib()
        print(f"  astropy KD-tree build {tree.get('build_s', 0):.1f} s; RSS now {cur:,.0f} MiB, peak {peak:,.0f} "
              f"MiB (peak before astropy's tree on this catalog: {peak_ours:,.0f} MiB)", flush=True)
        del tree, ix
    if not all(r[5] for r in results):
        print("MISMATCH between our kernel and a baseline", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
