"""Multi-messenger benchmarks: containment against ligo.skymap, and the coincidence stage's share of a batch.

1. **Containment**: 10^5 positions against a 10^6-pixel multi-order map (orders 8 and 9, built
   here from Gaussian blobs), our :class:`~broker.multimessenger.localization.MultiOrderMap`
   against ``ligo.skymap.postprocess.crossmatch`` on the same table and positions, in the same
   run. Ours indexes the map once (the sort crossmatch does on every call) and then answers each
   batch with one pixel look-up and one binary search; both figures are printed (the one-off
   index build, and the per-batch call), with the ratio, and the two answers are compared.
2. **Coincidence stage share**: the real embedded pipeline (SQLite store and index, file sink,
   OpenNGC cross-match, built-in filters) over jittered real ZTF/LSST packets with 10 active
   localizations in the store (4 LVK sample maps, 4 neutrino circles, 2 ellipses) whose time
   windows cover every alert: the ``multimessenger`` stage's share of the pipeline's stage time
   (target < 5 %), and the run without the stage as the baseline.

    python -m bench.bench_multimessenger            # ~1 minute
    python -m bench.bench_multimessenger --count 3000 --positions 100000 --pixels 1000000
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def _multiorder_map(n_pixels: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All order-8 cells, the densest split into their 4 order-9 children until there are ``n_pixels``."""
    import astropy_healpix as ah

    rng = np.random.default_rng(seed)
    base = 12 * 4**8
    n_split = max(0, math.ceil((n_pixels - base) / 3))
    lon, lat = ah.healpix_to_lonlat(np.arange(base), 2**8, order="nested")
    lon, lat = lon.rad, lat.rad
    dens = np.zeros(base)
    for _ in range(5):
        r0, d0 = rng.uniform(0, 2 * np.pi), np.arcsin(rng.uniform(-1, 1))
        sigma = np.radians(rng.uniform(2, 15))
        cosd = np.sin(d0) * np.sin(lat) + np.cos(d0) * np.cos(lat) * np.cos(lon - r0)
        dens += np.exp(-np.arccos(np.clip(cosd, -1, 1)) ** 2 / (2 * sigma**2)) / sigma**2
    dens += 1e-6 * dens.max()  # a floor: every pixel has some probability, as real maps do
    split = np.argsort(-dens)[:n_split]
    keep = np.ones(base, bool)
    keep[split] = False
    children = (4 * split[:, None] + np.arange(4)).ravel()
    clon, clat = ah.healpix_to_lonlat(children, 2**9, order="nested")
    cd = np.repeat(dens[split], 4) * (1 + 0.05 * np.sin(7 * clon.rad) * np.cos(5 * clat.rad))
    uniq = np.concatenate([4 * 4**8 + np.flatnonzero(keep), 4 * 4**9 + children]).astype(np.int64)
    density = np.concatenate([dens[keep], cd])
    area = np.where(uniq >= 4 * 4**9, 4 * np.pi / (12 * 4**9), 4 * np.pi / (12 * 4**8))
    return uniq, density / np.sum(density * area)


def bench_containment(n_positions: int, n_pixels: int, repeat: int) -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from ligo.skymap.postprocess import crossmatch

    from broker.multimessenger.localization import MultiOrderMap

    uniq, density = _multiorder_map(n_pixels)
    table = Table({"UNIQ": uniq, "PROBDENSITY": density})
    rng = np.random.default_rng(2)
    ra = rng.uniform(0, 360, n_positions)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_positions)))
    coords = SkyCoord(ra * u.deg, dec * u.deg)
    print(f"containment: {n_positions:,} positions against a {len(uniq):,}-pixel multi-order map (orders 8-9)")

    t = time.perf_counter()
    loc = MultiOrderMap(uniq, density)
    build = time.perf_counter() - t
    loc.containment(ra[:10], dec[:10])
    ours = min(_timed(lambda: loc.containment(ra, dec)) for _ in range(repeat))
    level, area = loc.containment(ra, dec)
    theirs = np.inf
    ref = None
    for _ in range(repeat):
        t = time.perf_counter()
        ref = crossmatch(table, coords)
        theirs = min(theirs, time.perf_counter() - t)
    dl = np.abs(level - 100 * ref.searched_prob)
    da = np.abs(area - ref.searched_area) / ref.searched_area
    print(f"  {'ligo.skymap.postprocess.crossmatch (baseline)':52s} {theirs:8.3f} s  {n_positions / theirs:12,.0f} pos/s")
    print(f"  {'ours: index the map once':52s} {build:8.3f} s")
    print(f"  {'ours: containment of the batch':52s} {ours:8.3f} s  {n_positions / ours:12,.0f} pos/s  "
          f"ratio {theirs / ours:6.1f}x")
    print(f"  {'ours: index + containment (a one-batch map)':52s} {build + ours:8.3f} s"
          f"  {'':12s}          ratio {theirs / (build + ours):6.1f}x")
    print(f"  agreement: max |level diff| {dl.max():.2e} %, max relative area diff {da.max():.2e}, "
          f"{int((dl > 1e-6).sum())} of {n_positions} positions differ")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _events(store, mjd: float, positions: np.ndarray, shared_lvk: Path | None) -> None:
    """10 active localizations around ``mjd`` (windows cover every alert): 4 LVK maps, 4 circles, 2 ellipses."""
    from broker.multimessenger import revisions
    from broker.multimessenger.notice import GW, NEUTRINO, LocalizationSpec, Notice, from_mjd, iso

    skymap = None
    if shared_lvk is not None and (shared_lvk / "bayestar.multiorder.fits").exists():
        skymap = (shared_lvk / "bayestar.multiorder.fits").read_bytes()
    rng = np.random.default_rng(3)
    specs = []
    for k in range(4):
        if skymap is not None:
            specs.append((GW, LocalizationSpec(shape="map"), skymap))
        else:
            specs.append((GW, LocalizationSpec(shape="circle", ra=10.0 * k, dec=0.0, radius=10.0), None))
    for k in range(6):
        ra, dec = positions[rng.integers(len(positions))]
        shape = (LocalizationSpec(shape="ellipse", ra=ra, dec=dec, a=1.5, b=0.7, pa=30.0) if k >= 4 else
                 LocalizationSpec(shape="circle", ra=ra, dec=dec, radius=float(rng.uniform(0.3, 2.0))))
        specs.append((NEUTRINO, shape, None))
    for k, (messenger, spec, data) in enumerate(specs):
        n = Notice(notice_id=f"bench{k:04d}", event_id=f"BENCH-{k}", messenger=messenger, format="gcn_json",
                   schema="bench", kind="INITIAL", revision=0, created=iso(from_mjd(mjd)), event_time=iso(from_mjd(mjd)),
                   mission="bench", localization=spec, skymap=data)
        store.put_notice(n.record(), data)
        ev, _ = revisions.apply(None, n, window_days=(1e4, 1e4))
        store.put_event(ev)


def bench_stage_share(count: int, batch_size: int) -> None:
    from bench.bench_pipeline import _make_stream
    from broker.adapters.outbox import OutboxIndexWriter
    from broker.adapters.search.sqlite import SQLiteIndex
    from broker.adapters.storage.sqlite import SQLiteStore
    from broker.adapters.streams.files import FileSource, StreamFileSink
    from broker.assemble import build_pipeline, open_catalogs
    from broker.association import Associator
    from broker.config import load_config
    from broker.ingest.decode import decode_message
    from broker.worker import Worker

    with tempfile.TemporaryDirectory(prefix="albireo-bench-mm-") as tmp:
        tmp = Path(tmp)
        stream = tmp / "bench.avro-stream"
        msgs = _make_stream(stream, count)
        trig = []
        for m in msgs:
            try:
                p = decode_message(m)[0].trigger
                trig.append((p.ra, p.dec, p.mjd))
            except Exception:  # the deliberately unreadable packet
                pass
        arr = np.array(trig)
        cfg = load_config(env={})
        cfg.catalogs.root = str(tmp / "catalogs")
        cfg.multimessenger.gw_days_before = cfg.multimessenger.gw_days_after = 1e4
        cfg.multimessenger.neutrino_days_before = cfg.multimessenger.neutrino_days_after = 1e4
        assoc = Associator(cfg.association.radius_arcsec)
        print(f"coincidence stage: {len(msgs)} jittered real ZTF/LSST packets, batches of {batch_size}, "
              "10 active localizations whose windows cover every alert")
        results = {}
        for label, enabled in (("without the stage (baseline)", False), ("with the stage", True)):
            cfg.multimessenger.enabled = enabled
            run = tmp / label.split()[0]
            run.mkdir()
            store = SQLiteStore(run / "store.sqlite", assoc.order)
            if enabled:
                _events(store, float(np.median(arr[:, 2])), arr[:, :2], _shared_lvk())
            writer = OutboxIndexWriter(SQLiteIndex(run / "index.sqlite"), run / "outbox.sqlite")
            pipe = build_pipeline(cfg, store, StreamFileSink(run / "out"), index_writer=writer,
                                  catalogs=open_catalogs(cfg), associator=assoc)
            summary = Worker(pipe, FileSource([stream]), batch_size=batch_size).run()
            writer.close()
            results[label] = summary
            store.close()
        base, mm = results["without the stage (baseline)"], results["with the stage"]
        total = sum(mm.stage_seconds.values())
        share = mm.stage_seconds.get("multimessenger", 0.0) / total
        tags = {k: v for k, v in mm.result.tags.items() if k.startswith("in_")}
        print(f"  {'pipeline without the stage':40s} {base.seconds:7.2f} s  {base.alerts_per_s:8,.0f} packets/s")
        print(f"  {'pipeline with the stage':40s} {mm.seconds:7.2f} s  {mm.alerts_per_s:8,.0f} packets/s  "
              f"ratio {mm.seconds / base.seconds:5.3f}")
        print(f"  multimessenger stage: {mm.stage_seconds.get('multimessenger', 0.0):.3f} s of {total:.2f} s stage time "
              f"= {100 * share:.2f}% of a batch (target < 5%: {'met' if share < 0.05 else 'NOT met'}); "
              f"coincidence tags {json.dumps(tags)}")
        print("  time per stage: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in
                                              sorted(mm.stage_seconds.items(), key=lambda kv: -kv[1])))


def _shared_lvk() -> Path | None:
    p = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lvk"
    return p if p.is_dir() else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=100_000)
    ap.add_argument("--pixels", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)  # the replicated unreadable packet's dead letters are expected
    bench_containment(args.positions, args.pixels, args.repeat)
    bench_stage_share(args.count, args.batch_size)


if __name__ == "__main__":
    main()
